"""Why the gradient vanishes or explodes: growth rate, Jacobian spectra, gates, clipping.

Four diagnostics, each defined once here and used by ``lrd.train`` (inside the
compiled programs) and by the tables and figures:

Signed gradient growth rate
    The per-step log growth rate r of ||dL/d state_t|| with the distance d from
    the loss: ln N(d) = a + r d, fitted by least squares. r < 0: the gradient
    vanishes (e-folding length -1/r steps); r > 0: it grows with distance
    (explodes). N(d) is the geometric mean over the probe batch of the
    per-sequence norms ||dL/d state_t||_2 (over hidden units), so one large
    sequence cannot dominate. The fit window leaves out the readout term (the
    distances 0 .. skip-1, where the loss reaches the state directly) and the
    initial-state transient (the first ``skip`` steps of the scan, where the
    state is still near its zero start), with skip = min(SKIP, n // 4) for n
    timesteps at distance >= 0 (SKIP = 5).

Jacobian spectra (layer 0, forward direction)
    J_t = d s_t / d s_{t-1} for one sequence, where s is the cell's whole state
    (the LSTM's (c, h) concatenated, 2H; the LRU's (Re h, Im h), 2N; H for the
    others), evaluated along the probe batch's own trajectory, through the cell's
    step ``__call__`` (a parallel cell's step computes the same recurrence). Its
    largest singular value per timestep comes from block power iteration on J^T J
    (POWER_BLOCK vectors, Rayleigh-Ritz) with jvp and vjp (the H x H Jacobian is
    never formed), warm-started from the previous timestep's vectors.
    The top-k Lyapunov exponents of the product J_T ... J_1 come from QR
    iteration (Benettin et al. 1980; Eckmann & Ruelle 1985): Q_t R_t = J_t Q_{t-1},
    from a fixed random orthonormal Q_0, with a burn-in:
    lambda_i = 1/(T - B) sum_{t > B} ln |R_t[i, i]|, B = T // BURN_IN (the first
    quarter). Finite-time bias: from a random start the first steps turn Q towards
    the leading directions, and ln |R_t[i, i]| there carries the start's projection,
    an error of order ln(n)/T per step. On a linear recurrence with known, separated
    eigenvalues (0.95, -0.8, 0.6, 0.45, ..., n = 8, k = 4, T = 64, 20 random starts)
    the largest error over the starts falls from 0.058 (no burn-in) to 0.003 (B = 16);
    with close eigenvalues (16 uniform in [0.3, 0.99]) the individual exponents mix
    more slowly than any burn-in, and the top exponent's error falls from 0.045 to 0.021
    (tests/test_dynamics.py). Round-off: where the Jacobians lose rank (a ReLU cell
    switching units off, a saturated gate), |R_t[i, i]| is float32 round-off, not
    dynamics; the fraction of the counted steps in which |R_t[i, i]| fell below
    ROUNDOFF times that step's largest |R_t[j, j]| is reported beside each exponent
    (``lyapunov_roundoff``), and an exponent with a fraction above zero is a bound
    from below-resolution steps, not a measurement (float64 gives lower values there).
    For the tanh RNN, h_t = tanh(a_t), J_t = diag(1 - h_t^2) U^T, so
    sigma_max(J_t) <= sigma_max(U) max_i (1 - h_{t,i}^2) (Pascanu, Mikolov &
    Bengio 2013, sec. 3.1); that bound is reported next to the measurement.
    Per timestep both are geometric means over ``spectrum_size`` sequences of
    the probe batch (the bound holds sequence by sequence, so it holds for the
    means); the exponents are arithmetic means over those sequences.

Gate statistics (layer 0, forward direction)
    Quantiles (QUANTILES) over the probe batch, timesteps and units of each gate
    the cell sows (``lrd.models.cells``): LSTM input, forget, output and
    candidate tanh(g); GRU reset, update and candidate n; the RNN's candidate
    tanh(a), which is its state; minGRU's z (the paper's: the weight of the new
    candidate) and minLSTM's f and i. XLA sorts slowly on CPU (1.2 s for the
    1.6 million activations of one gate at batch 128, T = 100, H = 128), so the
    quantiles come from a histogram of HIST_BINS bins over [-HIST_RANGE,
    HIST_RANGE] of the activation's pre-image (logit for a sigmoid, artanh for a
    tanh), linearly interpolated within a bin: within one bin width (0.012) of the
    exact quantile there, which keeps tau = 1/(1 - f) within about 1.2%; pre-images
    beyond the range (f above 1 - 6e-6) count at its edge.
    The effective time constant is tau = 1 / (1 - k), where k is the weight of the
    old state (LSTM: the forget gate f; GRU: the update gate z, as lrd's GRU keeps
    the old state with z: h' = z h + (1 - z) n; minGRU: 1 - z; minLSTM:
    f / (f + i)), the steps over which the kept part decays by e; its quantiles
    are those of k (by the same histogram) mapped through tau (monotone). A unit
    is saturated when its activation's derivative is below ``saturation`` times
    the largest the derivative can be: sigmoid' = g (1 - g) < saturation / 4,
    tanh' = 1 - g^2 < saturation.

Exploding-gradient instrumentation (per log block, inside the training scan)
    The maximum and the mean over the block's steps of the pre-clip global
    gradient norm, the fraction of steps whose norm reached the clipping
    threshold (optax clips when norm >= clip), and the number of loss spikes:
    steps whose training loss exceeds ``spike_factor`` times the median loss of
    the block's steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from lrd.buckets import Padded

FLOOR = float(np.finfo(np.float32).tiny)
POWER_BLOCK = 4  # vectors of the block power iteration for sigma_max (see jacobian_spectrum)
SKIP = 5  # distances and scan steps left out of the growth-rate fit, at most (see module docstring)
BURN_IN = 4  # Lyapunov exponents leave out the first T // BURN_IN steps of the QR iteration
ROUNDOFF = 1e-5  # |R_t[i, i]| below this fraction of the step's largest is float32 round-off (about 84 eps)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
HIST_BINS, HIST_RANGE = 2048, 12.0  # gate quantiles: histogram of the activation's pre-image (see above)
SIGMOID_GATES = ("input", "forget", "output", "reset", "update")  # sigmoid activations; the others are tanh
# the weight of the old state, per cell, from its sown gates (see the module docstring)
KEEP_WEIGHT: dict[str, Callable[[dict[str, jax.Array]], jax.Array]] = {
    "lstm": lambda g: g["forget"],
    "gru": lambda g: g["update"],
    "mingru": lambda g: 1.0 - g["update"],
    "minlstm": lambda g: g["forget"] / (g["forget"] + g["input"]),
}


# --- growth rate (NumPy: analysis of stored norms) -----------------------------------------
def growth_window(distance: np.ndarray, steps_from_start: np.ndarray) -> np.ndarray:
    """Mask of the timesteps in the growth-rate fit: past the readout term and the initial transient."""
    distance, steps_from_start = np.asarray(distance), np.asarray(steps_from_start)
    scored = distance >= 0
    skip = min(SKIP, int(scored.sum()) // 4)
    return scored & (distance >= skip) & (steps_from_start >= skip)


def growth_rate(
    log_norms: np.ndarray, distance: np.ndarray, steps_from_start: np.ndarray, below_floor: np.ndarray | None = None
) -> float:
    """Per-step log growth rate of the gradient norm with distance from the loss (1/steps).

    log_norms: (T,) ln of the per-timestep norm (the log geometric mean over the batch).
    distance, steps_from_start: (T,) ints; ``growth_window`` selects the fitted timesteps.
    below_floor: (T,) bool, timesteps whose norm was not measurable (left out).
    Negative: vanishing; positive: exploding; nan when fewer than three points qualify.
    """
    log_norms = np.asarray(log_norms, np.float64)
    ok = growth_window(distance, steps_from_start) & np.isfinite(log_norms)
    if below_floor is not None:
        ok &= ~np.asarray(below_floor, bool)
    d = np.asarray(distance, np.float64)[ok]
    if ok.sum() < 3 or np.ptp(d) == 0:
        return float("nan")
    return float(np.polyfit(d, log_norms[ok], 1)[0])


def e_folding_length(rate: float) -> float:
    """Steps over which a vanishing gradient falls by a factor e (-1/rate); nan unless rate < 0."""
    return float(-1.0 / rate) if np.isfinite(rate) and rate < 0 else float("nan")


def steps_from_start(length: int, direction: str) -> np.ndarray:
    """(T,) scan steps between each timestep and its direction's initial state."""
    t = np.arange(length)
    return t if direction == "fwd" else length - 1 - t


# --- Jacobian spectra (JAX) -------------------------------------------------------------------
Step = Callable[[jax.Array, jax.Array], jax.Array]  # (state (n,), input (D,)) -> next state (n,)


class Spectrum(NamedTuple):
    """Jacobian spectra along one or more trajectories.

    sigma_max: (..., T) largest singular value of J_t.
    lyapunov:  (..., k) top-k finite-time Lyapunov exponents (1/step), in QR order (decreasing as T grows),
               over the steps after the burn-in.
    roundoff:  (..., k) fraction of those steps in which |R_t[i, i]| was float32 round-off (see ROUNDOFF).
    """

    sigma_max: jax.Array
    lyapunov: jax.Array
    roundoff: jax.Array


# --- dense linear algebra without LAPACK ------------------------------------------------------
# The Jacobian spectra run inside the vmapped, looped training program. jnp.linalg.qr and svd
# lower to batched LAPACK custom calls on CPU, which XLA runs on its intra-op thread pool
# (jax::ParallelBatchMap); two of them occupying both threads of a 2-core pool each waited on
# sub-tasks queued behind the other, and the sweep hung (docs/reliability.md, "The XLA CPU stall").
# The few small factorisations the spectra need are written here in jnp, so a training program
# holds no custom call at all (tests/test_dynamics.py checks the lowered programs of every cell).
class QR(NamedTuple):
    """Thin QR factors of an (n, k) matrix, n >= k: q (n, k) orthonormal columns, r (k, k) upper triangular."""

    q: jax.Array
    r: jax.Array


def householder_qr(a: jax.Array) -> QR:
    """Thin QR of a (n, k), n >= k, by Householder reflections (Golub & Van Loan, Algorithm 5.2.1).

    LAPACK's convention (geqrf): the reflector of column j maps it to -sign(a_jj) ||a_j:|| e_j,
    so q and r equal LAPACK's up to rounding, signs included; a column with nothing below its
    diagonal gets the identity as its reflector (as in LAPACK's larfg: a zero column gives
    r_jj = 0) and q stays orthonormal. Backward stable in float32, like LAPACK.
    One ``fori_loop`` over the columns with masks, so the program does not grow with k.
    """
    n, k = a.shape
    rows = jnp.arange(n)

    def reflect(j, carry):
        r, vs, betas = carry
        x = jnp.where(rows >= j, r[:, j], 0.0)  # (n,) column j from row j down
        alpha = x[j]
        below = jnp.sum(jnp.where(rows > j, x * x, 0.0))  # nothing below the diagonal: no reflection (LAPACK)
        sign = jnp.where(alpha >= 0, 1.0, -1.0)
        v = x.at[j].add(sign * jnp.sqrt(alpha * alpha + below))  # x + sign ||x|| e_j
        vv = jnp.sum(v * v)
        beta = jnp.where(below > 0, 2.0 / jnp.where(vv > 0, vv, 1.0), 0.0)
        r = r - beta * v[:, None] * (v @ r)[None, :]  # (I - beta v v^T) r
        return r, vs.at[:, j].set(v), betas.at[j].set(beta)

    zeros = jnp.zeros((n, k), a.dtype)
    r, vs, betas = jax.lax.fori_loop(0, k, reflect, (a, zeros, jnp.zeros((k,), a.dtype)))

    def accumulate(i, q):  # q <- H_j q for j = k-1 .. 0: q = H_0 ... H_(k-1) I[:, :k]
        j = k - 1 - i
        v = vs[:, j]
        return q - betas[j] * v[:, None] * (v @ q)[None, :]

    q = jax.lax.fori_loop(0, k, accumulate, jnp.eye(n, k, dtype=a.dtype))
    return QR(q=q, r=jnp.triu(r[:k]))


SQUARINGS = 32  # top_singular_value: the weight of an eigenvalue l_i < l_1 falls as (l_i / l_1)^(2^SQUARINGS)


def top_singular_value(a: jax.Array) -> jax.Array:
    """The largest singular value of a (m, p), without LAPACK: sqrt of the top eigenvalue of a^T a.

    a is scaled by its largest entry first (a^T a would overflow float32 beyond 1.8e19).
    The top eigenvalue l_1 of G = a^T a comes from repeated squaring: M <- M^2 / tr(M^2),
    from M = G / tr(G), tends to the projector onto l_1's eigenspace divided by its
    dimension, so tr(G M) -> l_1 whatever its multiplicity; an eigenvalue l_i contributes
    with weight (l_i / l_1)^(2^SQUARINGS), which mixes in only eigenvalues that agree with
    l_1 to float32 precision. A zero matrix gives 0.
    """
    scale = jnp.max(jnp.abs(a))
    unit = a / jnp.where(scale > 0, scale, 1.0)
    g = unit.T @ unit  # (p, p)

    def normalised(m):
        trace = jnp.trace(m)
        return m / jnp.where(trace > 0, trace, 1.0)

    m = jax.lax.fori_loop(0, SQUARINGS, lambda _, m: normalised(m @ m), normalised(g))
    return scale * jnp.sqrt(jnp.maximum(jnp.sum(g * m.T), 0.0))  # sum(g * m^T) = tr(g m)


def orthonormal_start(n: int, k: int, key: jax.Array) -> jax.Array:
    """(n, k) fixed random orthonormal columns: Q_0 of the QR iteration."""
    return householder_qr(jax.random.normal(key, (n, k))).q


def jacobian_spectrum(
    step: Step,
    prev_states: jax.Array,
    inputs: jax.Array,
    q0: jax.Array,
    iterations: int,
    real: jax.Array | None = None,
    burn: int | jax.Array | None = None,
) -> Spectrum:
    """Spectra of J_t = d step(s, x_t) / d s at s = prev_states[t], for one sequence.

    prev_states: (T, n) the state each step starts from (s_{t-1}); inputs: (T, D).
    q0: (n, k) orthonormal start of the QR iteration (``orthonormal_start``).
    iterations: block power iterations per timestep for sigma_max, warm-started from the last.
    real, burn: a sequence padded at its end (``lrd.buckets``): only its steps from ``burn``
    to ``real`` (its length) are counted, and the sums are returned undivided (the caller
    divides by the steps counted, as a constant of the task).

    sigma_max: subspace (block power) iteration V <- qr(J^T J V) with POWER_BLOCK columns,
    then the largest singular value of J V (Rayleigh-Ritz): it converges at the rate
    (sigma_(p+1) / sigma_1)^2, not (sigma_2 / sigma_1)^2, which matters for the diagonal
    Jacobians of the parallel cells, whose top singular values are often close.
    """
    n, k = q0.shape
    p = min(POWER_BLOCK, n)
    v0 = q0[:, :p] if k >= p else orthonormal_start(n, p, jax.random.PRNGKey(0))

    length = prev_states.shape[0]
    padded = real is not None
    if burn is None:
        burn = length // BURN_IN

    def body(carry, xs):
        v, q, log_r, lost = carry
        s, x, t = xs
        _, jvp = jax.linearize(lambda s: step(s, x), s)
        vjp = jax.linear_transpose(jvp, s)
        jvp_cols = jax.vmap(jvp, in_axes=1, out_axes=1)  # J V, V (n, m)
        vjp_cols = jax.vmap(lambda w: vjp(w)[0], in_axes=1, out_axes=1)  # J^T W

        # warm start, with every direction present again (J_(t-1) may have zeroed some)
        v = householder_qr(v + 0.1 * v0).q
        power = lambda _, v: householder_qr(vjp_cols(jvp_cols(v))).q  # a zero Jacobian leaves an orthonormal V
        v = jax.lax.fori_loop(0, iterations, power, v)
        sigma = top_singular_value(jvp_cols(v))
        q, r = householder_qr(jvp_cols(q))  # (n, k), (k, k)
        diagonal = jnp.abs(jnp.diagonal(r))
        counted = (t >= burn) & (t < real) if padded else t >= burn
        log_r = log_r + jnp.where(counted, jnp.log(jnp.maximum(diagonal, FLOOR)), 0.0)
        lost = lost + (counted & (diagonal <= ROUNDOFF * jnp.max(diagonal)))
        return (v, q, log_r, lost), sigma

    zeros = jnp.zeros((k,), jnp.float32)
    (_, _, log_r, lost), sigma = jax.lax.scan(body, (v0, q0, zeros, zeros), (prev_states, inputs, jnp.arange(length)))
    if padded:
        return Spectrum(sigma_max=sigma, lyapunov=log_r, roundoff=lost)  # sums: the caller divides per task
    return Spectrum(sigma_max=sigma, lyapunov=log_r / (length - burn), roundoff=lost / (length - burn))


# --- the model's cell along the probe trajectory -----------------------------------------------
class Dynamics(NamedTuple):
    """Diagnostics of layer 0, forward direction, at one log point.

    sigma_max:  (T,) geometric mean over the spectrum sequences of sigma_max(J_t).
    pmb_bound:  (T,) geometric mean of sigma_max(U) max|tanh'| (tanh RNN only; nan otherwise).
    lyapunov:   (k,) top-k Lyapunov exponents, mean over the spectrum sequences.
    lyapunov_roundoff: (k,) fraction of steps at float32 round-off per exponent, mean over those sequences.
    quantiles:  {gate: (len(QUANTILES),)} activation quantiles over batch, timesteps and units.
    saturated:  {gate: ()} fraction of saturated activations.
    time_constant: (len(QUANTILES),) 1/(1 - k) at the quantiles of k, the old state's weight (nan without one).
    """

    sigma_max: jax.Array
    pmb_bound: jax.Array
    lyapunov: jax.Array
    lyapunov_roundoff: jax.Array
    quantiles: dict[str, jax.Array]
    saturated: dict[str, jax.Array]
    time_constant: jax.Array


def cell_trajectory(cell, cell_params, inputs: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Run one cell over ``inputs`` (B, T, D) from its zero state, collecting its gates.

    Returns the state each step starts from, (T, B, n) with n = (number of states) x H,
    and {gate: (T, B, H)} the sown gate activations.
    """
    B = inputs.shape[0]
    carry0 = type(cell).initial_state(B, cell.hidden, **{o: getattr(cell, o) for o in cell.options()})

    def body(carry, x):
        (carry_next, _), sown = cell.apply({"params": cell_params}, carry, x, mutable=["intermediates"])
        gates = {name: values[0] for name, values in sown.get("intermediates", {}).items()}
        return carry_next, (jnp.concatenate(carry, axis=-1), gates)  # (B, n)

    _, (prev_states, gates) = jax.lax.scan(body, carry0, jnp.swapaxes(inputs, 0, 1))  # (T, B, n)
    return prev_states, gates


def cell_step(cell, cell_params) -> Step:
    """The cell as a map of one sequence's flattened state: (n,), (D,) -> (n,)."""
    n_states = len(type(cell).state_names)

    def step(s, x):
        carry = tuple(part[None] for part in jnp.split(s, n_states))  # each (1, H)
        new_carry, _ = cell.apply({"params": cell_params}, carry, x[None])
        return jnp.concatenate(new_carry, axis=-1)[0]  # (n,)

    return step


def preimage(values: jax.Array, sigmoid: bool) -> jax.Array:
    """The pre-activation of ``values``: logit for a sigmoid's output, artanh for a tanh's (+-inf at 0/1, +-1)."""
    if sigmoid:
        return jnp.log(values) - jnp.log1p(-values)
    return 0.5 * (jnp.log1p(values) - jnp.log1p(-values))


def histogram_quantiles(values: jax.Array, sigmoid: bool) -> jax.Array:
    """(len(QUANTILES),) quantiles of all of ``values`` (activations of a sigmoid or a tanh), by histogram."""
    width = 2 * HIST_RANGE / HIST_BINS
    z = jnp.clip(preimage(values.ravel(), sigmoid), -HIST_RANGE, HIST_RANGE)
    index = jnp.clip(jnp.floor((z + HIST_RANGE) / width), 0, HIST_BINS - 1).astype(jnp.int32)
    counts = jnp.zeros((HIST_BINS,), jnp.float32).at[index].add(1.0)
    cdf = jnp.cumsum(counts) / z.size  # (bins,) fraction at or below each bin's upper edge
    qs = jnp.asarray(QUANTILES, jnp.float32)
    bins = jnp.searchsorted(cdf, qs)  # the first bin whose cdf reaches q
    below = jnp.where(bins > 0, cdf[jnp.maximum(bins - 1, 0)], 0.0)
    within = jnp.clip((qs - below) / jnp.maximum(counts[bins], 1.0) * z.size, 0.0, 1.0)
    z_q = -HIST_RANGE + (bins + within) * width
    return jax.nn.sigmoid(z_q) if sigmoid else jnp.tanh(z_q)


def gate_statistics(
    gates: dict[str, jax.Array], saturation: float, keep: Callable[[dict[str, jax.Array]], jax.Array] | None
) -> tuple[dict[str, jax.Array], dict[str, jax.Array], jax.Array]:
    """Quantiles, saturated fractions and time constants (from ``keep``, the weight of the old state) of gates."""
    quantiles = {name: histogram_quantiles(g, name in SIGMOID_GATES) for name, g in gates.items()}
    saturated = {}
    for name, g in gates.items():
        derivative = g * (1.0 - g) * 4.0 if name in SIGMOID_GATES else 1.0 - g**2  # scaled to a maximum of 1
        saturated[name] = jnp.mean(derivative < saturation)
    if keep is None:
        tau = jnp.full((len(QUANTILES),), jnp.nan, jnp.float32)
    else:
        tau = 1.0 / jnp.maximum(1.0 - histogram_quantiles(keep(gates), sigmoid=True), FLOOR)
    return quantiles, saturated, tau


def layer0_cell_params(params) -> dict:
    """The parameters of the cell of layer 0, forward direction, of a ``SequenceModel``."""
    layer = params["params"]["layer0_fwd"]
    return layer["scan"]["cell"] if "scan" in layer else layer["cell"]  # scanned step by step, or parallel


def model_dynamics(
    model_config,
    params,
    inputs: jax.Array,
    *,
    lyapunov_k: int,
    iterations: int,
    spectrum_size: int,
    saturation: float,
    key: jax.Array,
    padded: Padded | None = None,
) -> Dynamics:
    """All Jacobian and gate diagnostics of layer 0 (forward) of a ``SequenceModel`` on ``inputs`` (B, T, D).

    ``padded``: the length bucket (``lrd.buckets.Padded``) that padded ``inputs`` at their
    end. The real steps come first and are computed as unpadded; what depends on the real
    length (the gate statistics, the burn-in, the steps counted and the means over them) is
    computed in the task's branch on its real steps alone. The per-timestep ``sigma_max``
    and ``pmb_bound`` keep the padded steps, for the caller to cut.
    """
    cell = model_config.cell_module()
    cell_params = layer0_cell_params(params)
    prev_states, gates = cell_trajectory(cell, cell_params, inputs)  # (T, B, n)
    keep = KEEP_WEIGHT.get(model_config.cell)
    if padded is None:
        quantiles, saturated, tau = gate_statistics(gates, saturation, keep)
    else:
        real_gates = lambda n: gate_statistics({g: v[:n] for g, v in gates.items()}, saturation, keep)
        quantiles, saturated, tau = padded.per_task(real_gates)

    m = min(spectrum_size, inputs.shape[0])
    n = prev_states.shape[-1]
    q0 = orthonormal_start(n, min(lyapunov_k, n), key)
    step = cell_step(cell, cell_params)
    real = burn = None
    if padded is not None:
        real, burn = padded.real, padded.per_task(lambda n: jnp.int32(n // BURN_IN))
    spectrum = jax.vmap(lambda s, x: jacobian_spectrum(step, s, x, q0, iterations, real, burn), in_axes=(1, 0))(
        prev_states[:, :m], inputs[:m]
    )  # sigma_max (m, T), lyapunov (m, k)
    if padded is not None:  # the sums over the real steps after the burn-in, divided as unpadded
        spectrum = spectrum._replace(
            lyapunov=padded.per_task(lambda n: spectrum.lyapunov / (n - n // BURN_IN)),
            roundoff=padded.per_task(lambda n: spectrum.roundoff / (n - n // BURN_IN)),
        )
    log_sigma = jnp.log(jnp.maximum(spectrum.sigma_max, FLOOR))
    if model_config.cell == "rnn":
        U = cell_params["U"]  # (H, H)
        h = gates["candidate"][:, :m]  # (T, m, H): the RNN's new state tanh(a_t)
        log_bound = jnp.log(top_singular_value(U)) + jnp.log(jnp.maximum(jnp.max(1.0 - h**2, axis=-1), FLOOR))
        pmb = jnp.exp(jnp.mean(log_bound, axis=1))  # (T,)
    else:
        pmb = jnp.full((inputs.shape[1],), jnp.nan, jnp.float32)
    return Dynamics(
        sigma_max=jnp.exp(jnp.mean(log_sigma, axis=0)),
        pmb_bound=pmb,
        lyapunov=jnp.mean(spectrum.lyapunov, axis=0),
        lyapunov_roundoff=jnp.mean(spectrum.roundoff, axis=0),
        quantiles=quantiles,
        saturated=saturated,
        time_constant=tau,
    )


# --- exploding-gradient instrumentation (inside the training scan) ------------------------------
class BlockStats(NamedTuple):
    """One log block's pre-clip gradient norms and losses; nan for a block of no steps."""

    grad_norm_max: jax.Array
    grad_norm_mean: jax.Array
    clipped_fraction: jax.Array
    loss_spikes: jax.Array  # number of steps with loss > spike_factor x the block's median


def block_statistics(
    losses: jax.Array, grad_norms: jax.Array, taken: jax.Array, clip: float, spike_factor: float
) -> BlockStats:
    """Statistics of a block's steps; losses, grad_norms, taken: (n,), ``taken`` marks the real steps."""
    count = jnp.sum(taken)
    some = count > 0
    norms = jnp.where(taken, grad_norms, jnp.nan)
    clipped = taken & (grad_norms >= clip) if clip > 0 else jnp.zeros_like(taken)
    median = jnp.nanmedian(jnp.where(taken, losses, jnp.nan))
    spikes = jnp.sum(taken & (losses > spike_factor * median))
    nan = jnp.float32(jnp.nan)
    return BlockStats(
        grad_norm_max=jnp.where(some, jnp.nanmax(norms), nan),
        grad_norm_mean=jnp.where(some, jnp.nansum(norms) / jnp.maximum(count, 1), nan),
        clipped_fraction=jnp.where(some, jnp.sum(clipped) / jnp.maximum(count, 1), nan),
        loss_spikes=jnp.where(some, spikes.astype(jnp.float32), nan),
    )


# --- the curse of memory (Zucchet & Orvieto 2024) ----------------------------------------------
# h_t = lambda h_(t-1) + gamma x_t, x_t iid N(0, 1), h_0 = 0. The output's sensitivity to the
# eigenvalue, E[(d h_T / d lambda)^2] = gamma^2 sum_k k^2 lambda^(2(k-1)), tends (T -> infinity) to
# gamma^2 (1 + lambda^2) / (1 - lambda^2)^3: it explodes as |lambda| -> 1 although the state stays
# bounded. The LRU's normalisation gamma = sqrt(1 - lambda^2) (its gamma_log at initialisation) takes
# one power away, (1 + lambda^2) / (1 - lambda^2)^2; its parametrisation lambda = exp(-exp(nu)) adds
# (d lambda / d nu)^2 = (lambda ln lambda)^2, which vanishes like (1 - lambda)^2 at 1: together the
# sensitivity to nu stays bounded (it tends to 1/2).
MEMORY_FORMS = ("plain", "normalised", "lru")  # gamma = 1 wrt lambda; gamma = sqrt(1 - lambda^2) wrt lambda; LRU wrt nu


def memory_sensitivity_theory(lam, form: str):
    """The T -> infinity value of E[(d h_T / d theta)^2] for ``form`` (``MEMORY_FORMS``), per eigenvalue ``lam``."""
    lam = np.asarray(lam, np.float64)
    plain = (1 + lam**2) / (1 - lam**2) ** 3
    if form == "plain":
        return plain
    normalised = plain * (1 - lam**2)
    if form == "normalised":
        return normalised
    if form == "lru":
        return normalised * (lam * np.log(lam)) ** 2
    raise ValueError(f"form must be one of {', '.join(MEMORY_FORMS)} (got {form!r})")


def memory_sensitivity(lam: float, form: str, *, length: int, batch: int, key: jax.Array) -> float:
    """E[(d h_T / d theta)^2] measured over ``batch`` sequences of ``length`` steps, by forward-mode autodiff.

    "plain" and "normalised" differentiate h_t = lambda h_(t-1) + gamma x_t (gamma = 1 or
    sqrt(1 - lambda^2), held fixed) with respect to lambda; "lru" runs lrd's LRU cell
    (``lrd.models.lru.LRUCell.sequence``, one unit, a real eigenvalue: phase 1e-9, B = 1,
    gamma_log at its initialisation 0.5 ln(1 - lambda^2)) and differentiates its state
    h_T with respect to nu_log.
    """
    x = jax.random.normal(key, (batch, length), jnp.float32)
    if form in ("plain", "normalised"):
        gamma = 1.0 if form == "plain" else float(np.sqrt(1 - lam**2))

        def last_state(lam_):
            return jax.lax.scan(lambda h, x_t: (lam_ * h + gamma * x_t, None), jnp.zeros(batch), x.T)[0]

        _, tangent = jax.jvp(last_state, (jnp.float32(lam),), (jnp.float32(1.0),))
    elif form == "lru":
        from lrd.models.lru import LRUCell

        cell = LRUCell(hidden=1)
        params = {
            "nu_log": jnp.array([np.log(-np.log(lam))], jnp.float32),
            "theta_log": jnp.array([np.log(1e-9)], jnp.float32),
            "gamma_log": jnp.array([0.5 * np.log(1 - lam**2)], jnp.float32),
            "B_re": jnp.ones((1, 1)),
            "B_im": jnp.zeros((1, 1)),
            "C_re": jnp.eye(1),  # y = Re(h C) + x D = Re h_t with D = 0
            "C_im": jnp.zeros((1, 1)),
            "D": jnp.zeros((1, 1)),
        }

        def last_state(nu_log):
            p = {**params, "nu_log": nu_log}
            return cell.apply({"params": p}, x[..., None], method=LRUCell.sequence)[:, -1, 0]

        _, tangent = jax.jvp(last_state, (params["nu_log"],), (jnp.ones(1),))
    else:
        raise ValueError(f"form must be one of {', '.join(MEMORY_FORMS)} (got {form!r})")
    return float(np.mean(np.asarray(tangent, np.float64) ** 2))
