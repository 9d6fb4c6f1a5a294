//! The elementwise and row-wise math of the forward pass: layer norm, the
//! erf GELU and the attention softmax.
//!
//! The crate is built for baseline x86-64, where these loops stay scalar.
//! Each public kernel is therefore compiled again with AVX-512 and with
//! AVX2 + FMA enabled and picks the widest the CPU has at run time; the
//! loops are written so LLVM vectorises them (fixed-width accumulators for
//! reductions, no branches in the per-element functions).

/// Lanes of the accumulators in reductions: one AVX-512 register of f32.
const LANES: usize = 16;

macro_rules! dispatch {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) => $body:ident) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn narrow($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has every feature `wide` is compiled for
                    return unsafe { wide($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has every feature `narrow` is compiled for
                    return unsafe { narrow($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

dispatch! {
    /// Adds `bias` to each row of `rows` (row length = `bias.len()`), then
    /// normalises each row to zero mean and unit variance and scales it by
    /// `gamma` and shifts it by `beta`, as torch's LayerNorm (biased variance).
    pub fn bias_layer_norm(rows: &mut [f32], bias: &[f32], gamma: &[f32], beta: &[f32], eps: f32) => bias_layer_norm_impl
}

dispatch! {
    /// GELU with the exact erf form, after adding `bias` to each row.
    pub fn bias_gelu(rows: &mut [f32], bias: &[f32]) => bias_gelu_impl
}

dispatch! {
    /// Softmax of each row of `rows` (row length `width`) in place.
    pub fn softmax_rows(rows: &mut [f32], width: usize) => softmax_rows_impl
}

#[inline(always)]
fn sum_lanes(values: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, value) in lanes.iter_mut().zip(chunk) {
            *lane += value;
        }
    }
    let mut total: f32 = lanes.iter().sum();
    for value in chunks.remainder() {
        total += value;
    }
    total
}

#[inline(always)]
fn max_lanes(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, value) in lanes.iter_mut().zip(chunk) {
            *lane = if *value > *lane { *value } else { *lane };
        }
    }
    let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for value in chunks.remainder() {
        max = max.max(*value);
    }
    max
}

#[inline(always)]
fn bias_layer_norm_impl(rows: &mut [f32], bias: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let width = bias.len();
    debug_assert!(gamma.len() == width && beta.len() == width);
    debug_assert_eq!(rows.len() % width, 0);
    for row in rows.chunks_exact_mut(width) {
        for (value, bias) in row.iter_mut().zip(bias) {
            *value += bias;
        }
        let mean = sum_lanes(row) / width as f32;
        let mut lanes = [0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (lane, value) in lanes.iter_mut().zip(chunk) {
                let centred = value - mean;
                *lane += centred * centred;
            }
        }
        let mut squares: f32 = lanes.iter().sum();
        for value in chunks.remainder() {
            squares += (value - mean) * (value - mean);
        }
        let inverse_deviation = 1.0 / (squares / width as f32 + eps).sqrt();
        for ((value, gamma), beta) in row.iter_mut().zip(gamma).zip(beta) {
            *value = (*value - mean) * inverse_deviation * gamma + beta;
        }
    }
}

#[inline(always)]
fn bias_gelu_impl(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (value, bias) in row.iter_mut().zip(bias) {
            *value = gelu(*value + bias);
        }
    }
}

#[inline(always)]
fn softmax_rows_impl(rows: &mut [f32], width: usize) {
    for row in rows.chunks_exact_mut(width) {
        let max = max_lanes(row);
        for value in row.iter_mut() {
            *value = exp(*value - max);
        }
        let inverse_total = 1.0 / sum_lanes(row);
        for value in row.iter_mut() {
            *value *= inverse_total;
        }
    }
}

/// `0.5 x (1 + erf(x / √2))`, the GELU BERT was trained with (not the tanh
/// approximation).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf by Abramowitz & Stegun 7.1.26: absolute error below 1e-6 in f32
/// (most of it from rounding near 0, where GELU multiplies it by a small
/// x), and branch-free so it vectorises.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    let magnitude = x.abs();
    let t = 1.0 / (1.0 + P * magnitude);
    let poly = ((((A5 * t + A4) * t + A3) * t + A2) * t + A1) * t;
    let y = 1.0 - poly * exp(-magnitude * magnitude);
    y.copysign(x)
}

/// e^x for the range the forward pass needs (softmax exponents ≤ 0, the
/// Gaussian in erf): relative error about 2e-7; below -87 it returns a
/// tiny positive number instead of 0, which neither use can tell apart.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // 1.5 · 2^23: adding it rounds to an integer held in the low mantissa bits
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // e^r on |r| ≤ ln2/2: Taylor terms to r^7 leave under 1e-7
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // the integer n sits in the low bits of `shifted`; moving it into the
    // exponent field (shifting the rest out) makes 2^n
    let scale = f32::from_bits(shifted.to_bits().wrapping_add(127).wrapping_shl(23));
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series in f64: exact enough on |x| ≤ 4 to judge f32.
    fn erf_reference(x: f64) -> f64 {
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn samples(from: f32, to: f32, count: usize) -> impl Iterator<Item = f32> {
        (0..=count).map(move |i| from + (to - from) * i as f32 / count as f32)
    }

    #[test]
    fn exp_is_accurate_over_the_range_it_is_used_on() {
        for x in samples(-87.0, 88.0, 100_000) {
            let expected = f64::from(x).exp();
            let relative = ((f64::from(exp(x)) - expected) / expected).abs();
            assert!(relative < 1e-6, "exp({x}): relative error {relative}");
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
    }

    #[test]
    fn erf_and_gelu_are_accurate() {
        for x in samples(-4.0, 4.0, 20_000) {
            let exact = erf_reference(f64::from(x));
            let error = (f64::from(erf(x)) - exact).abs();
            assert!(error < 1e-6, "erf({x}): error {error}");
            let gelu_exact = 0.5 * f64::from(x) * (1.0 + erf_reference(f64::from(x) / std::f64::consts::SQRT_2));
            let gelu_error = (f64::from(gelu(x)) - gelu_exact).abs();
            assert!(gelu_error < 1e-6, "gelu({x}): error {gelu_error}");
        }
        assert_eq!(erf(9.0), 1.0);
        assert_eq!(erf(-9.0), -1.0);
        assert_eq!(gelu(0.0), 0.0);
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-6);
    }

    fn wavy(count: usize) -> Vec<f32> {
        (0..count)
            .map(|i| ((i * 7919 % 1000) as f32 / 100.0 - 5.0) * (1.0 + (i % 3) as f32))
            .collect()
    }

    #[test]
    fn layer_norm_matches_its_definition() {
        let width = 37;
        let bias = wavy(width);
        let gamma: Vec<f32> = wavy(width).iter().map(|g| g / 5.0).collect();
        let beta: Vec<f32> = wavy(width).iter().rev().copied().collect();
        let mut rows = wavy(3 * width);
        let original = rows.clone();
        bias_layer_norm(&mut rows, &bias, &gamma, &beta, 1e-12);
        for (row, input) in rows.chunks(width).zip(original.chunks(width)) {
            let shifted: Vec<f64> = input
                .iter()
                .zip(&bias)
                .map(|(x, b)| f64::from(*x) + f64::from(*b))
                .collect();
            let mean = shifted.iter().sum::<f64>() / width as f64;
            let variance = shifted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / width as f64;
            for (i, value) in row.iter().enumerate() {
                let expected =
                    (shifted[i] - mean) / (variance + 1e-12).sqrt() * f64::from(gamma[i]) + f64::from(beta[i]);
                assert!((f64::from(*value) - expected).abs() < 1e-4, "{value} vs {expected}");
            }
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_keep_order() {
        let width = 21;
        let mut rows = wavy(4 * width);
        let original = rows.clone();
        softmax_rows(&mut rows, width);
        for (row, input) in rows.chunks(width).zip(original.chunks(width)) {
            let max = input.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let total: f64 = input.iter().map(|x| f64::from(x - max).exp()).sum();
            for (value, x) in row.iter().zip(input) {
                let expected = f64::from(x - max).exp() / total;
                assert!((f64::from(*value) - expected).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn vectorised_and_scalar_kernels_agree() {
        let bias = wavy(64);
        let mut fast = wavy(64 * 5);
        let mut scalar = fast.clone();
        bias_gelu(&mut fast, &bias);
        bias_gelu_impl(&mut scalar, &bias);
        for (a, b) in fast.iter().zip(&scalar) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
        let mut fast = wavy(50 * 3);
        let mut scalar = fast.clone();
        softmax_rows(&mut fast, 50);
        softmax_rows_impl(&mut scalar, 50);
        for (a, b) in fast.iter().zip(&scalar) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
    }
}
