# Reproducers of the torch 2.13.0 CPU findings listed in docs/findings.md (run: python docs/findings/torch-2.13-cpu.py)
import torch, torch.nn.functional as F
from torch.func import jvp
torch.manual_seed(0); torch.set_num_threads(1)
print("torch", torch.__version__)
# 1. LayerNorm backward: dgamma/dbeta accumulated in the half format
x = torch.randn(4096, 8).bfloat16()
w = torch.ones(8, dtype=torch.bfloat16, requires_grad=True); b = torch.zeros(8, dtype=torch.bfloat16, requires_grad=True)
dw, db = torch.autograd.grad(F.layer_norm(x, (8,), w, b), (w, b), torch.ones(4096, 8, dtype=torch.bfloat16))
print("1. LN bf16 dbeta (exact 4096):", db[:2].tolist())
xh = x.half(); w = torch.ones(8, dtype=torch.half, requires_grad=True); b = torch.zeros(8, dtype=torch.half, requires_grad=True)
print("   LN f16 dbeta (exact 4096):", torch.autograd.grad(F.layer_norm(xh, (8,), w, b), (b,), torch.ones(4096, 8, dtype=torch.half))[0][:2].tolist())
# 2. float16 forward-mode AD overflows
x = 0.01 * torch.randn(4, 8); t = torch.randn(4, 8)
print("2. LN f16 jvp finite?", torch.isfinite(jvp(lambda x: F.layer_norm(x, (8,)), (x.half(),), (t.half(),))[1]).all().item(),
      "| f32:", torch.isfinite(jvp(lambda x: F.layer_norm(x, (8,)), (x,), (t,))[1]).all().item())
# 3. BatchNorm training in half: batch mean rounded to half before normalizing
x = (1000 + torch.randn(64, 2, dtype=torch.float64))
x16 = x.half(); xe = x16.double()
ref = (xe - xe.mean(0)) / torch.sqrt(xe.var(0, unbiased=False) + 1e-5)
y = F.batch_norm(x16, None, None, training=True).double()
y32 = F.batch_norm(x16.float(), None, None, training=True).double()
print("3. BN f16 training max |y - exact|:", float((y - ref).abs().max()), "| same data in f32:", float((y32 - ref).abs().max()),
      "| f16 output ulp at 2:", 2**-9)
_, m, inv = torch.native_batch_norm(x16, None, None, None, None, True, 0.1, 1e-5)
print("   save_mean dtype", m.dtype, "save_mean", m.tolist(), "exact", xe.mean(0).tolist())
# 4. group_norm forward AD on channels_last input raises
x = torch.randn(2, 4, 3, 3).to(memory_format=torch.channels_last)
try:
    jvp(lambda x: F.group_norm(x, 2), (x,), (torch.randn_like(x),)); print("4. no error")
except RuntimeError as e: print("4. GN jvp channels_last:", str(e)[:90])
# 5. BatchNorm inference, half, channels-last-strided 3-D input: different (less accurate) path
xn = torch.randn(4, 5, 3).half()       # (N, L, C) data
rm, rv, g, bb = torch.randn(3).half(), (torch.rand(3) + .5).half(), torch.randn(3).half(), torch.randn(3).half()
a = F.batch_norm(xn.permute(0, 2, 1), rm, rv, g, bb, False, 0.1, 1e-5)
c = F.batch_norm(xn.permute(0, 2, 1).contiguous(), rm, rv, g, bb, False, 0.1, 1e-5)
print("5. BN inference f16 strided vs contiguous: elements differing", int((a != c).sum()), "of", a.numel())
# 6. weight_norm forward AD not implemented for dim=0
m = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(3, 4, bias=False), dim=0)
try:
    jvp(lambda v: torch._weight_norm(v, m.parametrizations.weight.original0, 0), (m.parametrizations.weight.original1.detach(),), (torch.ones(4, 3),))
except NotImplementedError as e: print("6. weight_norm jvp:", str(e)[:90])
# 10. F.group_norm runs BatchNorm's batch-size check: one value per group raises for N = 1 only
b = torch.tensor([0.5])
print("10. GN one value per group, N=2:", F.group_norm(torch.tensor([[3.0], [4.0]]), 1, torch.ones(1), b).ravel().tolist(), end="")
try:
    print(" | N=1:", F.group_norm(torch.tensor([[3.0]]), 1, torch.ones(1), b).ravel().tolist())
except ValueError as e: print(" | N=1 raises:", str(e)[:80])
