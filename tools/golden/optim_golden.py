#!/usr/bin/python3
"""Golden parameter trajectories for clinic's optimizer tests.

Run with Debian's python3-torch (LibTorch 1.13 kernels):
    /usr/bin/python3 tools/golden/optim_golden.py > test/data/optim_golden.txt

Problem: 6 float64 parameters p, loss = sum(w * (p - t)^2) + 0.05 * sum(p^4),
20 steps. Records p after every step for torch.optim.Adam, torch.optim.RAdam
and faithful transcriptions of Transformer-Clinic's radam_fairseq, the
reference LiyuanLucasLiu/RAdam (with and without degenerated_to_sgd) and
torch's decoupled-weight-decay RAdam (added after 1.13).

Also two parameter groups with their own lr schedule, betas, eps and weight
decay ("groups_<optimizer>" lines: the first 3 entries are group a, the last 3
group b), as clinic's optim.groups builds them:
  a: lr(k) = 0.05 * min(k^-0.5, k * 4^-1.5)   (noam, noam_dim 1, warmup 4)
     betas (0.9, 0.98), eps 1e-8, weight decay 0.1
  b: fairseq inverse_sqrt, peak 0.01, warmup 3, from 0 at update 0:
     update k uses schedule(k - 1) = (k-1) * 0.01 / 3 while k-1 < 3, else
     0.01 * sqrt(3 / (k-1)); betas (0.8, 0.99), eps 1e-2 (large enough to matter), weight decay 0
"""
import math
import torch

torch.set_default_dtype(torch.float64)
P0 = torch.tensor([0.5, -1.2, 2.0, 0.03, -0.7, 1.1])
T = torch.tensor([1.0, 0.5, -0.5, 0.2, 0.0, -1.5])
W = torch.tensor([1.0, 0.3, 2.0, 5.0, 0.7, 1.5])
STEPS, LR, BETAS, EPS, WD = 20, 0.05, (0.9, 0.98), 1e-8, 0.1
LR_DEFAULT = LR


def grad_of(p):
    return 2 * W * (p - T) + 0.2 * p ** 3


def run_torch(opt_cls, **kw):
    p = P0.clone().requires_grad_(True)
    opt = opt_cls([p], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, **kw)
    out = []
    for _ in range(STEPS):
        opt.zero_grad()
        p.grad = grad_of(p.detach())
        opt.step()
        out.append(p.detach().clone())
    return out


def rho(t, b2):
    rho_inf = 2 / (1 - b2) - 1
    return rho_inf, rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)


def run_manual(flavour, degenerated_to_sgd=False, decoupled=False, p0=None, lrs=None,
               betas=BETAS, eps=EPS, wd=WD, grad=None):
    """lrs: the lr of each step (default LR); grad: p -> gradient."""
    b1, b2 = betas
    EPS, WD = eps, wd
    grad_fn = grad or grad_of
    p = (P0 if p0 is None else p0).clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    out = []
    for t in range(1, STEPS + 1):
        LR = LR_DEFAULT if lrs is None else lrs[t - 1]
        g = grad_fn(p)
        if flavour == "torch" and not decoupled:
            g = g.add(p, alpha=WD)
        if flavour == "torch" and decoupled:
            p.mul_(1 - LR * WD)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        m.mul_(b1).add_(g, alpha=1 - b1)
        rho_inf, rho_t = rho(t, b2)
        if flavour == "clinic":  # radam_fairseq/radam.py
            if rho_t >= 5:
                step = LR * math.sqrt((1 - b2 ** t) * (rho_t - 4) / (rho_inf - 4) * (rho_t - 2)
                                      / rho_t * rho_inf / (rho_inf - 2)) / (1 - b1 ** t)
            p.add_(p, alpha=-WD * LR)
            if rho_t >= 5:
                p.addcdiv_(m, v.sqrt().add_(EPS), value=-step)
        elif flavour == "reference":  # LiyuanLucasLiu/RAdam radam.py
            if rho_t >= 5:
                step = math.sqrt((1 - b2 ** t) * (rho_t - 4) / (rho_inf - 4) * (rho_t - 2)
                                 / rho_t * rho_inf / (rho_inf - 2)) / (1 - b1 ** t)
            elif degenerated_to_sgd:
                step = 1.0 / (1 - b1 ** t)
            else:
                step = -1
            if rho_t >= 5:
                p.add_(p, alpha=-WD * LR)
                p.addcdiv_(m, v.sqrt().add_(EPS), value=-step * LR)
            elif step > 0:
                p.add_(p, alpha=-WD * LR)
                p.add_(m, alpha=-step * LR)
        elif flavour == "torch":  # torch/optim/radam.py (_single_tensor_radam)
            bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
            if rho_t > 5:
                rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                                 / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                adaptive = math.sqrt(bc2) / v.sqrt().add_(EPS)
                p.add_(m / bc1 * LR * adaptive * rect, alpha=-1.0)
            else:
                p.add_(m / bc1 * LR, alpha=-1.0)
        out.append(p.clone())
    return out


def emit(name, traj):
    for i, p in enumerate(traj, 1):
        print(name, i, " ".join(repr(float(x)) for x in p))


# The transcription must reproduce torch.optim.RAdam itself before its
# decoupled variant (absent from 1.13) is trusted.
for a, b in zip(run_torch(torch.optim.RAdam), run_manual("torch")):
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-14), (a, b)

emit("adam", run_torch(torch.optim.Adam))
emit("radam_torch", run_torch(torch.optim.RAdam))
emit("radam_torch_decoupled", run_manual("torch", decoupled=True))
emit("radam_clinic", run_manual("clinic"))
emit("radam_reference", run_manual("reference"))
emit("radam_reference_sgd", run_manual("reference", degenerated_to_sgd=True))


# Two parameter groups (clinic's optim.groups).
GA, GB = slice(0, 3), slice(3, 6)
LRS_A = [0.05 * min(k ** -0.5, k * 4 ** -1.5) for k in range(1, STEPS + 1)]
LRS_B = [(k - 1) * 0.01 / 3 if k - 1 < 3 else 0.01 * math.sqrt(3 / (k - 1))
         for k in range(1, STEPS + 1)]
A = dict(betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1)
B = dict(betas=(0.8, 0.99), eps=1e-2, weight_decay=0.0)


def grad_part(sl):
    return lambda q: (2 * W[sl] * (q - T[sl]) + 0.2 * q ** 3)


def run_torch_groups(opt_cls):
    pa = P0[GA].clone().requires_grad_(True)
    pb = P0[GB].clone().requires_grad_(True)
    opt = opt_cls([dict(params=[pa], lr=LRS_A[0], **A), dict(params=[pb], lr=LRS_B[0], **B)])
    out = []
    for t in range(STEPS):
        opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = LRS_A[t], LRS_B[t]
        opt.zero_grad()
        pa.grad = grad_part(GA)(pa.detach())
        pb.grad = grad_part(GB)(pb.detach())
        opt.step()
        out.append(torch.cat([pa.detach(), pb.detach()]))
    return out


def run_manual_groups(flavour, **kw):
    a = run_manual(flavour, p0=P0[GA], lrs=LRS_A, betas=A["betas"], eps=A["eps"],
                   wd=A["weight_decay"], grad=grad_part(GA), **kw)
    b = run_manual(flavour, p0=P0[GB], lrs=LRS_B, betas=B["betas"], eps=B["eps"],
                   wd=B["weight_decay"], grad=grad_part(GB), **kw)
    return [torch.cat([x, y]) for x, y in zip(a, b)]


# The per-group transcription reproduces torch.optim.RAdam with two groups.
for a, b in zip(run_torch_groups(torch.optim.RAdam), run_manual_groups("torch")):
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-14), (a, b)

emit("groups_adam", run_torch_groups(torch.optim.Adam))
emit("groups_adamw", run_torch_groups(torch.optim.AdamW))
emit("groups_radam_torch", run_torch_groups(torch.optim.RAdam))
emit("groups_radam_torch_decoupled", run_manual_groups("torch", decoupled=True))
emit("groups_radam_clinic", run_manual_groups("clinic"))
emit("groups_radam_reference", run_manual_groups("reference"))
