//! Run-time dispatch of repdef's own hot loops to the widest vector instructions the CPU has
//! (AVX-512, AVX2, …). repdef is built for baseline x86-64, where such loops get SSE2's 4 lanes;
//! the matrix products (gemm, faer) already dispatch this way.

/// A loop to compile for the widest vector instructions the CPU has. `run` and everything it
/// calls must be `#[inline(always)]`, so that it is compiled inside [`dispatch`]'s
/// target-feature function.
pub trait Vectorized {
    type Output;
    fn run(self) -> Self::Output;
}

struct Dispatched<V>(V);

impl<V: Vectorized> pulp::WithSimd for Dispatched<V> {
    type Output = V::Output;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> V::Output {
        self.0.run()
    }
}

/// Runs `op` compiled for the widest vector instructions this CPU has (AVX-512, AVX2, …),
/// picked at run time: repdef is built for baseline x86-64, where its loops get SSE2's 4 lanes.
/// The float operations are the same (no fused multiply-add is formed), so every path gives the
/// same bits.
pub fn dispatch<V: Vectorized>(op: V) -> V::Output {
    pulp::Arch::new().dispatch(Dispatched(op))
}
