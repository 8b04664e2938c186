"""The XLA flags the JAX adapters add for fast compilation (``adapters/_jax.py``)."""

from __future__ import annotations

from refsoftmax.conformance.adapters._jax import fast_compile_flags

FAST = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def test_flags_added_after_the_users_own(monkeypatch):
    monkeypatch.delenv("REFSOFTMAX_XLA_FAST_COMPILE", raising=False)
    assert fast_compile_flags("") == FAST
    assert fast_compile_flags("--xla_dump_to=/tmp/x") == f"--xla_dump_to=/tmp/x {FAST}"


def test_a_flag_the_user_set_is_left_alone(monkeypatch):
    monkeypatch.delenv("REFSOFTMAX_XLA_FAST_COMPILE", raising=False)
    mine = "--xla_cpu_use_fusion_emitters=true"
    assert fast_compile_flags(mine) == f"{mine} --xla_backend_optimization_level=0"
    mine = "--xla_backend_optimization_level=2"
    assert fast_compile_flags(mine) == f"{mine} --xla_cpu_use_fusion_emitters=false"


def test_opt_out(monkeypatch):
    monkeypatch.setenv("REFSOFTMAX_XLA_FAST_COMPILE", "0")
    assert fast_compile_flags("") == ""
    assert fast_compile_flags("--xla_dump_to=/tmp/x") == "--xla_dump_to=/tmp/x"
