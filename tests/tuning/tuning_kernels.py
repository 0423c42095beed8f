"""DSL kernels the tuning tests tune."""

# MODE picks what a candidate does: 0 the right thing, 1 the wrong thing (twice the
# answer), 2 loops for ever (10**12 trips), 3 does not compile (a broadcast of [BLOCK]
# with [BLOCK + 1]). BLOCK = 4194304 puts three 16 MiB tiles on the stack of a CPU block:
# the worker dies of SIGSEGV.
PLANTED = """
kernel planted(x: f32[N], y: f32[N])
    params BLOCK in (64, 128, 4194304), MODE in (0, 1, 2, 3)
    grid (cdiv(N, BLOCK)) warps 4
{
    i = bid.x * BLOCK
    t = load(x[i : +BLOCK])
    s = t
    if MODE == 1 {
        s = t * 2.0
    }
    if MODE == 3 {
        s = s + zeros(f32, [BLOCK + 1])
    }
    reps = 1
    if MODE == 2 {
        reps = 1000000000000
    }
    acc = zeros(f32, [BLOCK])
    for r in range(0, reps) {
        acc = acc + s
    }
    store(y[i : +BLOCK], acc / reps)
}
"""

# A small real space: a row-sum whose block and chunk sizes are tunable.
ROWSUM = """
kernel rowsum(x: f32[M, N], y: f32[M])
    params BM in (1, 2, 4), BN in (32, 64, 128, 256)
    grid (cdiv(M, BM)) warps 4
{
    i = bid.x * BM
    acc = zeros(f32, [BM, BN])
    for j in range(0, N, BN) {
        acc = acc + load(x[i : +BM, j : +BN])
    }
    store(y[i : +BM], sum(acc, axis=1))
}
"""
