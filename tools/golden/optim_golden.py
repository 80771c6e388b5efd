#!/usr/bin/python3
"""Golden parameter trajectories for clinic's optimizer tests.

Run with Debian's python3-torch (LibTorch 1.13 kernels):
    /usr/bin/python3 tools/golden/optim_golden.py > test/data/optim_golden.txt

Problem: 6 float64 parameters p, loss = sum(w * (p - t)^2) + 0.05 * sum(p^4),
20 steps. Records p after every step for torch.optim.Adam, torch.optim.RAdam
and faithful transcriptions of Transformer-Clinic's radam_fairseq, the
reference LiyuanLucasLiu/RAdam (with and without degenerated_to_sgd) and
torch's decoupled-weight-decay RAdam (added after 1.13).
"""
import math
import torch

torch.set_default_dtype(torch.float64)
P0 = torch.tensor([0.5, -1.2, 2.0, 0.03, -0.7, 1.1])
T = torch.tensor([1.0, 0.5, -0.5, 0.2, 0.0, -1.5])
W = torch.tensor([1.0, 0.3, 2.0, 5.0, 0.7, 1.5])
STEPS, LR, BETAS, EPS, WD = 20, 0.05, (0.9, 0.98), 1e-8, 0.1


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


def run_manual(flavour, degenerated_to_sgd=False, decoupled=False):
    b1, b2 = BETAS
    p = P0.clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    out = []
    for t in range(1, STEPS + 1):
        g = grad_of(p)
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
