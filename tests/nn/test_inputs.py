"""Inputs torch's kernels do not take, handled: half and bfloat16 models on the fused CSR path (MKL
has no such CSR kernel, so the product runs in float32 and is rounded back; it used to crash with
``addmm_out_sparse_csr_impl_mkl not implemented for 'BFloat16'``), and integer node features
without an encoder (a message naming ``AtomEncoder`` instead of torch's dtype error)."""

from __future__ import annotations

import pytest
import torch

from pyg_rbp.nn import CSRAdjacency


def _graph(n: int = 12, e: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, n, (2, e), generator=g)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_csr_product_and_gradients_match_float32(dtype):
    ei = _graph()
    w32 = torch.rand(ei.size(1), generator=torch.Generator().manual_seed(1))
    x32 = torch.randn(12, 5, generator=torch.Generator().manual_seed(2))
    bias32 = torch.randn(12, 5, generator=torch.Generator().manual_seed(3))
    ref = CSRAdjacency(ei, w32, 12).matmul(x32, bias32)
    w, x, bias = (t.to(dtype).requires_grad_() for t in (w32, x32, bias32))
    out = CSRAdjacency(ei, w, 12).matmul(x, bias)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.03)
    out.float().pow(2).sum().backward()
    w_r, x_r, b_r = (t.clone().requires_grad_() for t in (w32, x32, bias32))
    CSRAdjacency(ei, w_r, 12).matmul(x_r, b_r).pow(2).sum().backward()
    for got, want in ((w.grad, w_r.grad), (x.grad, x_r.grad), (bias.grad, b_r.grad)):
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want, atol=0.5, rtol=0.05)
    plain = CSRAdjacency(ei, None, 12, dtype=dtype).matmul(x32.to(dtype))  # no autograd
    torch.testing.assert_close(plain.float(), CSRAdjacency(ei, None, 12).matmul(x32), atol=0.1, rtol=0.03)


@pytest.mark.filterwarnings("ignore:fixed_point. the state did not settle")
def test_a_bfloat16_fixed_point_model_trains_on_the_fused_path():
    from pyg_rbp.nn.models import FixedPointNodeClassifier

    torch.manual_seed(0)
    ei = _graph(30, 90)
    x = torch.randn(30, 6)
    model = FixedPointNodeClassifier(6, 8, 3, cell="gated", max_iter=5, grad="neumann",
                                     backward_iter=3)
    reference = model(x, ei).detach()
    model = model.to(torch.bfloat16)
    out = model(x.to(torch.bfloat16), ei)
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out.float()).all())
    torch.testing.assert_close(out.float(), reference, atol=0.15, rtol=0.1)
    out.float().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g.float()).all()) for g in grads)


def test_integer_features_without_an_encoder_name_the_encoder():
    from ogb.graphproppred.mol_encoder import AtomEncoder

    from pyg_rbp.nn.models import FixedPointGraphModel, FixedPointNodeClassifier

    x = torch.randint(0, 2, (10, 9))  # OGB molecules: 9 categorical atom features
    ei = _graph(10, 20)
    batch = torch.zeros(10, dtype=torch.long)
    for model, args in ((FixedPointGraphModel(9, 8, 1, max_iter=3), (x, ei, batch)),
                        (FixedPointNodeClassifier(9, 8, 3, max_iter=3), (x, ei))):
        with pytest.raises(TypeError, match=r"integer dtype torch\.int64.*node_encoder=AtomEncoder"):
            model(*args)
    encoded = FixedPointGraphModel(9, 8, 1, max_iter=3, node_encoder=AtomEncoder(8))
    assert encoded(x, ei, batch).shape == (1, 1)  # with the encoder, integers are what it wants
