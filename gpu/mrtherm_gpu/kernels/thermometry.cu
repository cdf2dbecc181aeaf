// Fused per-frame thermometry kernels for mrtherm (loaded with cupy.RawModule).
//
// Layout: one frame is (z, y, x) C-contiguous; a slice is ny*nx pixels.
// Grid: blockIdx.y = slice z; blocks in x stride over the pixels of that slice.
// Flag bits per voxel: 1 = reliable (mask), 2 = drift-reference candidate,
// 4 = changed earlier (|rise| above heated_c), 8 = valid in this frame (signal there),
// 16 = tracked (valid in this and the previous frame: unwrapped in time),
// 32 = back (valid after a gap or for the first time: re-anchored to tracked neighbours).
//
// The arithmetic mirrors mrtherm.engine.ArrayEngine step by step (float32 phase,
// float64 drift, dose and statistics) so both paths agree to rounding:
//   pass 1  unwrap_accumulate_o{0,1,2}: dphi = angle(S conj(S_ref)), per-frame validity
//           (|S|^2 >= floor^2, |S|^2 >= fraction^2 |S_ref|^2, |S_ref|^2 >= floor^2), temporal
//           unwrap of tracked voxels against the previous frame (round half to even, as NumPy),
//           per-slice weighted moments of the drift polynomial's normal equations,
//           with outlier rejection in automatic mode; accumulate_fallback_o{0,1,2}
//           the same without it, launched only for a frame whose fit falls back.
//   reanchor: voxels back from a gap take the 2 pi multiple nearest the mean of the tracked
//           voxels in their 3 x 3 in-plane window, else 5 x 5 (after pass 1 has written every tracked u).
//   pass 2  temperature_dose_o{0,1,2}: drift subtraction, PRF conversion, mask,
//           exact CEM43 increment over segments between valid frames (linear temperature,
//           split at 43 C), Tmax over valid frames, baseline sums and changed flags.

#define FLAG_MASK 1
#define FLAG_REF 2
#define FLAG_CHANGED 4
#define FLAG_VALID 8
#define FLAG_TRACKED 16
#define FLAG_BACK 32
#define ANCHOR_NEAR 1
#define ANCHOR_FAR 2

__device__ __forceinline__ float nan_f() { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ double nan_d() { return __longlong_as_double(0x7ff8000000000000LL); }

template <int K>
__device__ __forceinline__ void poly_basis(int x, int y, int nx, int ny, double* a) {
    // Coordinates scaled to [-1, 1] across the slice, as numpy.linspace(-1, 1, n).
    double xn = nx > 1 ? -1.0 + x * (2.0 / (nx - 1)) : 0.0;
    double yn = ny > 1 ? -1.0 + y * (2.0 / (ny - 1)) : 0.0;
    a[0] = 1.0;
    if (K >= 3) { a[1] = xn; a[2] = yn; }
    if (K == 6) { a[3] = xn * xn; a[4] = xn * yn; a[5] = yn * yn; }
}

template <int K>
__device__ __forceinline__ double poly_eval(const double* __restrict__ c, const double* a) {
    double s = 0.0;
#pragma unroll
    for (int j = 0; j < K; ++j) s += c[j] * a[j];
    return s;
}

// Statistics per slice: the M distinct monomials x^a y^b among the basis products (the normal matrix's entries
// are sums of w times them: 15 for the quadratic basis instead of its 21 packed products), K right-hand sides,
// 1 count. One set per launch: pass 1 reduces the fit's own weights (inliers in automatic mode); the fallback
// launch reduces every reference voxel, only in the rare frame that needs it. Two sets in one pass held
// 2 x 28 double accumulators per thread (158 registers at K = 6, one 256-thread block per SM).
template <int K>
struct NStats {
    static const int M = K == 1 ? 1 : (K == 3 ? 6 : 15);
    static const int Q = M + K + 1;
};

// The moments in the order the host unpacks them (gpu/mrtherm_gpu/thermometry.py MOMENT_EXPONENTS); the first
// K are the basis itself (1, x, y, x^2, xy, y^2).
template <int K>
__device__ __forceinline__ void moments(int x, int y, int nx, int ny, double* m) {
    const double xn = nx > 1 ? -1.0 + x * (2.0 / (nx - 1)) : 0.0;
    const double yn = ny > 1 ? -1.0 + y * (2.0 / (ny - 1)) : 0.0;
    m[0] = 1.0;
    if (K >= 3) { m[1] = xn; m[2] = yn; m[3] = xn * xn; m[4] = xn * yn; m[5] = yn * yn; }
    if (K == 6) {
        m[6] = m[3] * xn; m[7] = m[3] * yn; m[8] = xn * m[5]; m[9] = m[5] * yn;
        m[10] = m[3] * m[3]; m[11] = m[3] * m[4]; m[12] = m[3] * m[5]; m[13] = m[4] * m[5]; m[14] = m[5] * m[5];
    }
}

// FALLBACK = 0: pass 1 (phase change, unwrap into u, the fit's weights). FALLBACK = 1: the same frame again with
// u as pass 1 left it and every reference voxel not yet heated (the statistics without outlier exclusion).
template <int K, int FALLBACK>
__device__ void unwrap_accumulate(
    const float* __restrict__ comp_a, const float* __restrict__ comp_b, int polar,
    const float2* __restrict__ s_ref, float* __restrict__ u, unsigned char* __restrict__ flags,
    const double* __restrict__ prev_coeffs, int has_prev, int auto_mode, double outlier_rad,
    double floor2, double fraction2, int nz, int ny, int nx, double* __restrict__ stats)
{
    const int M = NStats<K>::M;
    const int Q = NStats<K>::Q;
    __shared__ double block_acc[NStats<6>::Q];
    const int z = blockIdx.y;
    const int npix = ny * nx;
    for (int q = threadIdx.x; q < Q; q += blockDim.x) block_acc[q] = 0.0;
    __syncthreads();

    double acc[Q];
#pragma unroll
    for (int q = 0; q < Q; ++q) acc[q] = 0.0;
    const double* pc = prev_coeffs + (long long)z * K;
    const float two_pi = 6.283185307179586f;

    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < npix; p += gridDim.x * blockDim.x) {
        const long long idx = (long long)z * npix + p;
        float sr, si;
        if (polar) {
            float sn, cs;
            sincosf(comp_b[idx], &sn, &cs);
            sr = comp_a[idx] * cs;
            si = comp_a[idx] * sn;
        } else {
            sr = comp_a[idx];
            si = comp_b[idx];
        }
        if (!isfinite(sr) || !isfinite(si)) { sr = 0.0f; si = 0.0f; }
        float uu;
        unsigned char f = flags[idx];
        const double w = (double)sr * sr + (double)si * si;  // double, as the NumPy twin
        if (FALLBACK) {
            uu = u[idx];
        } else {
            const float2 r = s_ref[idx];
            const float pr = sr * r.x + si * r.y;     // S * conj(S_ref)
            const float pi = si * r.x - sr * r.y;
            const float dphi = atan2f(pi, pr);
            const double ref2 = (double)r.x * r.x + (double)r.y * r.y;
            const bool valid = (f & FLAG_MASK) && w >= floor2 && w >= fraction2 * ref2 && ref2 >= floor2;
            const bool was_valid = (f & FLAG_VALID) != 0;
            unsigned char nf = f & (FLAG_MASK | FLAG_REF | FLAG_CHANGED);
            if (valid) nf |= FLAG_VALID;
            if (has_prev && valid && was_valid) nf |= FLAG_TRACKED;
            if (has_prev && valid && !was_valid) nf |= FLAG_BACK;
            uu = dphi;
            if (nf & FLAG_TRACKED) {
                const float k = rintf((u[idx] - dphi) / two_pi);
                uu = dphi + k * two_pi;
            }
            u[idx] = uu;
            flags[idx] = nf;
            f = nf;
        }
        // the drift fit takes voxels tracked since the last frame (every valid voxel in the first frame)
        const bool fit = has_prev ? (f & FLAG_TRACKED) != 0 : (f & FLAG_VALID) != 0;
        double m[M];
        moments<K>(p % nx, p / nx, nx, ny, m);
        double ws;
        if (auto_mode) {
            ws = (fit && (f & FLAG_REF) && !(f & FLAG_CHANGED)) ? w : 0.0;
            if (!FALLBACK && ws > 0.0) {
                const double drift_prev = poly_eval<K>(pc, m);
                if (!(fabs((double)uu - drift_prev) < outlier_rad)) ws = 0.0;
            }
        } else {
            ws = (fit && (f & FLAG_REF)) ? w : 0.0;
        }
        if (ws > 0.0) {
#pragma unroll
            for (int q = 0; q < M; ++q) acc[q] += ws * m[q];
#pragma unroll
            for (int i = 0; i < K; ++i) acc[M + i] += ws * m[i] * (double)uu;
            acc[Q - 1] += 1.0;
        }
    }
    // warp reduction, then one shared atomic per warp, then one global atomic per block
    const unsigned full = 0xffffffffu;
#pragma unroll
    for (int q = 0; q < Q; ++q) {
        double v = acc[q];
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(full, v, off);
        if ((threadIdx.x & 31) == 0 && v != 0.0) atomicAdd(&block_acc[q], v);
    }
    __syncthreads();
    for (int q = threadIdx.x; q < Q; q += blockDim.x)
        if (block_acc[q] != 0.0) atomicAdd(&stats[(long long)z * Q + q], block_acc[q]);
}

// Voxels back from a gap: the multiple of 2 pi that brings the phase change (u as pass 1 left it) nearest the
// mean u of the tracked voxels in the 3 x 3 in-plane window, or the 5 x 5 one without any; unchanged where neither
// holds one. Only back voxels write and only tracked voxels are read, so there is no race.
extern "C" __global__ void reanchor(float* u, const unsigned char* flags, int nz, int ny, int nx) {
    const int z = blockIdx.y;
    const int npix = ny * nx;
    const double two_pi = 6.283185307179586;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < npix; p += gridDim.x * blockDim.x) {
        const long long idx = (long long)z * npix + p;
        if (!(flags[idx] & FLAG_BACK)) continue;
        const int x = p % nx, y = p / nx;
        double near_total = 0.0, near_n = 0.0, total = 0.0, n = 0.0;
        for (int yy = y - ANCHOR_FAR; yy <= y + ANCHOR_FAR; ++yy) {
            if (yy < 0 || yy >= ny) continue;
            for (int xx = x - ANCHOR_FAR; xx <= x + ANCHOR_FAR; ++xx) {
                if (xx < 0 || xx >= nx) continue;
                const long long j = (long long)z * npix + (long long)yy * nx + xx;
                if (flags[j] & FLAG_TRACKED) {
                    total += (double)u[j]; n += 1.0;
                    if (abs(yy - y) <= ANCHOR_NEAR && abs(xx - x) <= ANCHOR_NEAR) {
                        near_total += (double)u[j];
                        near_n += 1.0;
                    }
                }
            }
        }
        if (near_n > 0.0) { total = near_total; n = near_n; }
        if (n > 0.0) {
            const double d = (double)u[idx];
            const double k = rint((total / n - d) / two_pi);
            u[idx] = (float)(d + two_pi * k);
        }
    }
}

__device__ __forceinline__ double one_minus_exp_over(double d) {
    return fabs(d) < 1e-6 ? 1.0 - 0.5 * d : -expm1(-d) / d;
}

__device__ __forceinline__ double regime_piece(double t0, double t1, double dt, double ln_r, bool below) {
    const double brk = 43.0;
    double a0, a1;
    bool inside;
    if (below) { a0 = fmin(t0, brk); a1 = fmin(t1, brk); inside = t0 < brk; }
    else       { a0 = fmax(t0, brk); a1 = fmax(t1, brk); inside = t0 >= brk; }
    const double span = t1 - t0;
    const double frac = span == 0.0 ? (inside ? 1.0 : 0.0) : (a1 - a0) / span;
    const double g0 = exp(ln_r * (brk - a0));
    return dt * frac * g0 * one_minus_exp_over(ln_r * (a1 - a0));
}

__device__ __forceinline__ double cem43_segment(float t0f, float t1f, double dt_min) {
    if (isnan(t0f) || isnan(t1f)) return nan_d();
    const double t0 = t0f, t1 = t1f;
    return regime_piece(t0, t1, dt_min, -1.3862943611198906, true)     // ln 0.25
         + regime_piece(t0, t1, dt_min, -0.6931471805599453, false);   // ln 0.5
}

template <int K>
__device__ void temperature_dose(
    const float* __restrict__ u, unsigned char* __restrict__ flags, const double* __restrict__ coeffs,
    double to_celsius, float body_temp_c, float heated_c,
    float* __restrict__ temp_out, const float* __restrict__ temp_prev, int has_prev, double dt_min,
    double* __restrict__ dose, float* __restrict__ tmax, int first,
    int is_baseline, double* __restrict__ base_sum, double* __restrict__ base_sumsq,
    int* __restrict__ base_count, int* __restrict__ valid_frames, int nz, int ny, int nx)
{
    const int z = blockIdx.y;
    const int npix = ny * nx;
    const double* c = coeffs + (long long)z * K;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < npix; p += gridDim.x * blockDim.x) {
        const long long idx = (long long)z * npix + p;
        double a[6];
        poly_basis<K>(p % nx, p / nx, nx, ny, a);
        const double drift = poly_eval<K>(c, a);
        const float delta = (float)(((double)u[idx] - drift) * to_celsius);
        unsigned char f = flags[idx];
        const bool valid = (f & FLAG_VALID) != 0;  // implies FLAG_MASK
        const float t = valid ? delta + body_temp_c : nan_f();
        temp_out[idx] = t;
        if (has_prev) {
            const double seg = cem43_segment(temp_prev[idx], t, dt_min);
            if (!isnan(seg)) dose[idx] += seg;  // no dose across an invalid frame
        }
        if (first) {
            tmax[idx] = t;
        } else {
            const float m = tmax[idx];
            tmax[idx] = isnan(m) ? t : (isnan(t) ? m : fmaxf(m, t));
        }
        if (valid && fabsf(delta) > heated_c) flags[idx] = f | FLAG_CHANGED;
        if (valid) valid_frames[idx] += 1;
        if (is_baseline && valid) {
            const double d = (double)delta;
            base_sum[idx] += d;
            base_sumsq[idx] += d * d;
            base_count[idx] += 1;
        }
    }
}

// 256 threads a block (BLOCK in thermometry.py); MIN_BLOCKS per SM bounds the registers: the quadratic basis
// at 3 blocks fits 80 registers without spills (ptxas, sm_90), 24 resident warps (it had 158 registers, 8 warps)
// (only where a CUDA compiler reads this: nvcc, NVRTC; the CPU emulation's kernel parser expects the name after void)
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define UNWRAP_BOUNDS(MIN_BLOCKS) __launch_bounds__(256, MIN_BLOCKS)
#else
#define UNWRAP_BOUNDS(MIN_BLOCKS)
#endif
#define UNWRAP_ENTRY(NAME, K, FALLBACK, MIN_BLOCKS)                                                     \
extern "C" __global__ void UNWRAP_BOUNDS(MIN_BLOCKS) NAME(                                              \
    const float* comp_a, const float* comp_b, int polar, const float2* s_ref, float* u,                 \
    unsigned char* flags, const double* prev_coeffs, int has_prev, int auto_mode,                       \
    double outlier_rad, double floor2, double fraction2, int nz, int ny, int nx, double* stats) {       \
    unwrap_accumulate<K, FALLBACK>(comp_a, comp_b, polar, s_ref, u, flags, prev_coeffs, has_prev,       \
                                   auto_mode, outlier_rad, floor2, fraction2, nz, ny, nx, stats);       \
}

#define DOSE_ENTRY(NAME, K)                                                                             \
extern "C" __global__ void NAME(                                                                        \
    const float* u, unsigned char* flags, const double* coeffs, double to_celsius, float body_temp_c,   \
    float heated_c, float* temp_out, const float* temp_prev, int has_prev, double dt_min,               \
    double* dose, float* tmax, int first, int is_baseline, double* base_sum, double* base_sumsq,        \
    int* base_count, int* valid_frames, int nz, int ny, int nx) {                                       \
    temperature_dose<K>(u, flags, coeffs, to_celsius, body_temp_c, heated_c, temp_out, temp_prev,       \
                        has_prev, dt_min, dose, tmax, first, is_baseline, base_sum, base_sumsq,         \
                        base_count, valid_frames, nz, ny, nx);                                          \
}

UNWRAP_ENTRY(unwrap_accumulate_o0, 1, 0, 1)
UNWRAP_ENTRY(unwrap_accumulate_o1, 3, 0, 1)
UNWRAP_ENTRY(unwrap_accumulate_o2, 6, 0, 3)
UNWRAP_ENTRY(accumulate_fallback_o0, 1, 1, 1)
UNWRAP_ENTRY(accumulate_fallback_o1, 3, 1, 1)
UNWRAP_ENTRY(accumulate_fallback_o2, 6, 1, 3)
DOSE_ENTRY(temperature_dose_o0, 1)
DOSE_ENTRY(temperature_dose_o1, 3)
DOSE_ENTRY(temperature_dose_o2, 6)
