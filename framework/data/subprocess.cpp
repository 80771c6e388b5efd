#include "framework/data/subprocess.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace clinic {
namespace {

std::vector<char*> c_argv(const std::vector<std::string>& argv) {
  std::vector<char*> v;
  for (const auto& a : argv) v.push_back(const_cast<char*>(a.c_str()));
  v.push_back(nullptr);
  return v;
}

void exec_or_die(const std::vector<std::string>& argv) {
  auto v = c_argv(argv);
  ::execv(v[0], v.data());
  std::string msg = "cannot execute " + argv[0] + ": " + std::strerror(errno) + "\n";
  (void)!::write(2, msg.data(), msg.size());
  ::_exit(127);
}

}  // namespace

CommandResult run_command(const std::vector<std::string>& argv,
                          std::string* out) {
  int err_pipe[2], out_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe() failed");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork() failed");
  if (pid == 0) {
    ::dup2(err_pipe[1], 2);
    ::dup2(out_pipe[1], 1);
    exec_or_die(argv);
  }
  ::close(err_pipe[1]);
  ::close(out_pipe[1]);
  CommandResult r;
  std::string stdout_text;
  pollfd fds[2] = {{err_pipe[0], POLLIN, 0}, {out_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? r.err : stdout_text).append(buf, static_cast<size_t>(n));
      }
    }
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (out) *out = std::move(stdout_text);
  return r;
}

CoProcess::CoProcess(const std::vector<std::string>& argv) : name_(argv.at(0)) {
  int in_pipe[2], out_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe() failed");
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork() failed");
  if (pid_ == 0) {
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    exec_or_die(argv);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  to_child_ = in_pipe[1];
  from_child_ = out_pipe[0];
  // A dead helper must surface as an error from write(), not kill us.
  ::signal(SIGPIPE, SIG_IGN);
}

CoProcess::~CoProcess() {
  if (to_child_ >= 0) ::close(to_child_);
  if (from_child_ >= 0) ::close(from_child_);
  if (pid_ > 0) {
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
}

std::string CoProcess::read_line() {
  char buf[4096];
  for (;;) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    ssize_t n = ::read(from_child_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw std::runtime_error(fmt::format("{} exited unexpectedly", name_));
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

std::string CoProcess::request(const std::string& line) {
  std::string msg = line + "\n";
  size_t done = 0;
  while (done < msg.size()) {
    ssize_t w = ::write(to_child_, msg.data() + done, msg.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      throw std::runtime_error(fmt::format("{} exited unexpectedly", name_));
    done += static_cast<size_t>(w);
  }
  return read_line();
}

}  // namespace clinic
