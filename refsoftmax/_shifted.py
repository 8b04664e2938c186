r"""The max-shifted row every softmax-family loss starts from, computed to a few ulps.

For logits :math:`z` (classes on the last axis, some possibly masked to
:math:`-\infty`) and the row maximum :math:`m`:

.. math::

    \hat z_c = z_c - m \le 0,\qquad e_c = e^{\hat z_c},\qquad
    s = \sum_c e_c = 1 + r,\qquad \log s = \operatorname{log1p}(r),

where :math:`r = s - 1` is the sum over every class except one copy of the
maximum (whose term is exactly 1).  Three things make the results accurate to
a few ulps, also for confident examples (margins up to ~700):

1. **The shift's rounding error is kept.**  :math:`\hat z_c = \mathrm{fl}(z_c -
   m)` is off by up to half an ulp of :math:`\hat z_c`, which
   :math:`e^{\hat z_c}` turns into a *relative* error of
   :math:`|\hat z_c|\,\epsilon/2` (350 ulp at :math:`\hat z = -700`).  The
   error term :math:`\delta_c = (z_c - m) - \hat z_c` is recovered exactly
   with Knuth's TwoSum and folded back in: :math:`e_c = e^{\hat z_c}(1 + \delta_c)`.
2. **No** :math:`\log(1 + \text{tiny})`.  :math:`r` is summed directly (never
   as :math:`s - 1`), and :math:`\log s = \operatorname{log1p}(r)` keeps its
   relative accuracy when :math:`r \ll 1`: the loss of a confident example
   (margin 40: :math:`4.2\times10^{-18}`) is no longer rounded to 0.
3. **No** :math:`1 - p`.  The gradient spike :math:`p_t - 1` is
   :math:`-(s - e_t)/s` with :math:`s - e_t = r - \operatorname{expm1}(\hat z_t + \delta_t)`,
   a sum of two non-negative terms (:meth:`Rows.complement_at`).

Rows with no allowed class (all :math:`-\infty`) have :math:`s = 0`; rows with
a NaN stay NaN; the callers decide what such rows mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from array_api_compat import device as device_of

from refsoftmax._concrete import may_hold

__all__ = ["Rows", "backend_kernel", "exp_minus", "shift_rows", "shifted_exp"]


@dataclass(frozen=True)
class Rows:
    """The shifted rows of one call (classes last, ``keepdims`` row quantities)."""

    xp: Any
    m: Any  # row maximum of the allowed logits, 0 in a row with none      [..., 1]
    zhat: Any  # fl(z - m); -inf on masked classes                         [..., C]
    err: Any  # (z - m) - zhat exactly; 0 where zhat is not finite        [..., C]
    e: Any  # exp(z - m) to ~1 ulp; 0 on masked classes                     [..., C]
    rest: Any  # s - 1, summed without cancellation                         [..., 1]
    s: Any  # Σ e (1 + rest); 0 in a row with no allowed class              [..., 1]

    @property
    def empty(self) -> Any:
        """True in rows with no allowed class."""
        return self.s == 0

    @property
    def log_s(self) -> Any:
        """:math:`\\log s = \\operatorname{log1p}(r)` (0 in empty rows, where it is unused)."""
        return self.xp.log1p(self.rest)  # rest is 0 in empty rows

    def neg_log_probs(self) -> Any:
        r""":math:`-\log p_c = \log s - \hat z_c - \delta_c \ge 0`, +∞ on every class of an empty row.

        The terms are :math:`\log s \ge 0` and :math:`-(z_c - m) \ge 0`: no cancellation.
        """
        xp = self.xp
        out = (self.log_s - self.zhat) - self.err
        return xp.where(self.empty, xp.full_like(out, xp.inf), out)

    def neg_log_prob_at(self, index: Any) -> Any:
        """``-log p`` of one class per row (``index`` ``[...]``, int64); shape ``[...]``."""
        xp = self.xp
        idx = xp.expand_dims(index, axis=-1)
        zhat_t = xp.take_along_axis(self.zhat, idx, axis=-1)
        err_t = xp.take_along_axis(self.err, idx, axis=-1)
        out = (self.log_s - zhat_t) - err_t
        return xp.where(self.empty, xp.full_like(out, xp.inf), out)[..., 0]

    def probabilities(self) -> Any:
        """``e / s`` (softmax over the allowed classes), 0 in empty rows."""
        xp = self.xp
        return xp.where(self.empty, xp.zeros_like(self.e), self.e / xp.where(
            self.empty, xp.ones_like(self.s), self.s))

    def complement_at(self, index: Any) -> Any:
        r""":math:`1 - p_t` to a few ulps, also when :math:`p_t \to 1`; shape ``[...]``.

        :math:`1 - p_t = (s - e_t)/s` and :math:`s - e_t = r + (1 - e_t)
        = r - \operatorname{expm1}(\hat z_t) - \delta_t e_t`: when :math:`t` is
        the (first) maximum, :math:`\hat z_t = 0` and this is :math:`r` itself;
        otherwise :math:`r \ge e_t` already holds :math:`t`'s own term and
        :math:`1 - e_t \ge 0`.  Either way, non-negative terms only.
        """
        xp = self.xp
        idx = xp.expand_dims(index, axis=-1)
        zhat_t = xp.take_along_axis(self.zhat, idx, axis=-1)
        err_t = xp.take_along_axis(self.err, idx, axis=-1)
        e_t = xp.take_along_axis(self.e, idx, axis=-1)
        # 1 - e^{ẑ+δ} = -expm1(ẑ) - δ e^{ẑ} to first order (δ ≤ ulp(ẑ)/2)
        one_minus_e = -xp.expm1(zhat_t) - err_t * e_t
        others = self.rest + one_minus_e
        # a masked target (e_t = 0) gives 1 + r; the row's own 1 is in r's complement
        safe_s = xp.where(self.empty, xp.ones_like(self.s), self.s)
        out = xp.where(self.empty, xp.ones_like(others), others / safe_s)
        return out[..., 0]


def backend_kernel(xp: Any, name: str) -> Any:
    """The backend's optional kernel ``name`` for the namespace ``xp``, or ``None``.

    A kernel (e.g. NumPy's, :mod:`refsoftmax.backends.numpy_kernels`) re-schedules the
    arithmetic of this module in row blocks, so that no ``[..., C]`` temporary exists; it
    returns ``None`` for inputs it does not handle (a row whose maximum is infinite), and the
    caller then runs the array-API code.
    """
    from refsoftmax import backends

    return getattr(backends.for_namespace(xp), name, None)


def shift_rows(z: Any, allowed: Any | None = None, *, xp: Any, temperature: float = 1.0) -> Rows:
    r"""Max-shift the last axis of ``z`` (classes where ``allowed`` is false at :math:`-\infty`).

    With ``temperature`` :math:`T`, the rows are :math:`(z - m)/T`: the shift
    comes first (a tiny :math:`T` cannot overflow) and its exact error term is
    divided too, so the only rounding :math:`T` adds is that of the two
    quotients (none when :math:`T` is a power of two).

    A row with no finite maximum (all :math:`-\infty`) is shifted by 0 and has
    ``s = 0``.  A NaN entry makes the row NaN.  A row with :math:`k \ge 1`
    (allowed) entries at :math:`+\infty` and no NaN is its limit along
    :math:`z_i = c + t`, :math:`t \to \infty` (equal infinities share
    equally): its rows are those of 0 on the infinite entries and
    :math:`-\infty` elsewhere, so :math:`p = 1/k` there and 0 elsewhere,
    :math:`-\log p = \log k` or :math:`+\infty`, and :math:`1 - p_t` is
    :math:`(k-1)/k` or 1 (not the NaN of :math:`\infty - \infty`).  The
    shift ``m`` of such a row is 0: a caller that needs the log-sum-exp itself
    sets it to :math:`+\infty`.
    """
    neg_inf = xp.asarray(-xp.inf, dtype=z.dtype, device=device_of(z))
    if allowed is not None:
        z = xp.where(allowed, z, neg_inf)
    m = xp.max(z, axis=-1, keepdims=True)  # NaN in a row with a NaN (every backend propagates it)
    limit = m == xp.inf  # rows with a +inf entry and no NaN
    if may_hold(xp, limit):  # the limit rows: 0 on the +inf entries, -inf elsewhere
        z = xp.where(limit, xp.where(z == xp.inf, xp.zeros_like(z), neg_inf), z)
        m = xp.where(limit, xp.zeros_like(m), m)
    empty = m == -xp.inf  # no allowed class (a NaN row has a NaN maximum and stays NaN)
    m = xp.where(empty, xp.zeros_like(m), m)
    zhat, err, e = _exp_minus(z, m, xp=xp, temperature=temperature)
    at_max = zhat == 0  # z == m exactly (a float difference is 0 only for equal floats)
    ties = xp.sum(xp.astype(at_max, z.dtype), axis=-1, keepdims=True)
    # r = s - 1: every term except one copy of the maximum (exactly 1), summed directly
    rest = xp.sum(xp.where(at_max, xp.zeros_like(e), e), axis=-1, keepdims=True) + (ties - 1.0)
    rest = xp.where(empty, xp.zeros_like(rest), rest)
    s = xp.where(empty, xp.zeros_like(rest), 1.0 + rest)
    return Rows(xp, m, zhat, err, e, rest, s)


def exp_minus(z: Any, m: Any, *, xp: Any) -> Any:
    r""":math:`e^{z - m}` to ~1 ulp (``m`` broadcast against ``z``; :math:`z \le m` expected).

    For callers that shift by a maximum found elsewhere (the chunked linear
    loss); the same arithmetic as :func:`shift_rows`.
    """
    return _exp_minus(z, m, xp=xp)[2]


def shifted_exp(z: Any, m: Any, *, xp: Any) -> tuple[Any, Any, Any]:
    r"""``(ẑ, δ, e)``: :math:`\mathrm{fl}(z - m)`, its exact error, and :math:`e^{z - m}` to ~1 ulp.

    For callers that combine rows computed elsewhere (the class-sharded losses of
    :mod:`refsoftmax.distributed`, whose maximum comes from an all-reduce).
    """
    return _exp_minus(z, m, xp=xp)


def _exp_minus(z: Any, m: Any, *, xp: Any, temperature: float = 1.0) -> tuple[Any, Any, Any]:
    """``(zhat, err, e)``: ``fl(z - m)`` (divided by ``temperature``), its exact error, and the exponential."""
    # the TwoSum runs on -inf (masked) entries raised to a huge finite number, so it never
    # forms inf - inf (NaN, and a NumPy warning); e^{z - m} is 0 there either way
    zhat = z - m  # -inf stays -inf (a masked class)
    floor = -xp.finfo(z.dtype).max / 4
    zc = xp.maximum(z, xp.asarray(floor, dtype=z.dtype, device=device_of(z)))
    total = zc - m
    # TwoSum (Knuth): err = (z - m) - zhat exactly, whatever |z| and |m|
    b_virtual = total - zc
    err = (zc - (total - b_virtual)) + (-m - b_virtual)
    del zc, total, b_virtual
    if temperature != 1.0:
        zhat = zhat / temperature
        err = xp.where(xp.isfinite(zhat), err / temperature, xp.zeros_like(err))  # zhat/T overflowed
    e = xp.exp(zhat)
    # e^{ẑ+δ} = e^{ẑ}(1 + δ) to first order (|δ| ≤ ulp(ẑ)/2).  Not e + e * δ: below e^-678 the
    # product e * δ is subnormal, which backends that flush subnormals to zero (XLA on the CPU)
    # drop, losing the correction (455 ulps at a margin of 700)
    e = e * (1.0 + err)
    return zhat, err, e
