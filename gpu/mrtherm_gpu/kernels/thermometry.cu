// Fused per-frame thermometry kernels for mrtherm (loaded with cupy.RawModule).
//
// Layout: one frame is (z, y, x) C-contiguous; a slice is ny*nx pixels.
// Grid: blockIdx.y = slice z; blocks in x stride over the pixels of that slice.
// Flag bits per voxel: 1 = reliable (mask), 2 = drift-reference candidate,
// 4 = heated earlier (rise above heated_c).
//
// The arithmetic mirrors mrtherm.engine.ArrayEngine step by step (float32 phase,
// float64 drift, dose and statistics) so both paths agree to rounding:
//   pass 1  unwrap_accumulate_o{0,1,2}: dphi = angle(S conj(S_ref)), temporal
//           unwrap against the previous frame (round half to even, as NumPy),
//           per-slice weighted normal equations of the drift polynomial, twice:
//           set 0 with outlier rejection (automatic reference), set 1 without.
//   pass 2  temperature_dose_o{0,1,2}: drift subtraction, PRF conversion, mask,
//           exact CEM43 increment (linear temperature, split at 43 C), Tmax,
//           baseline sums and heated flags.

#define FLAG_MASK 1
#define FLAG_REF 2
#define FLAG_HEATED 4

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

// Statistics per slice and set: K(K+1)/2 packed products, K right-hand sides, 1 count.
template <int K>
struct NStats { static const int Q = K * (K + 1) / 2 + K + 1; };

template <int K>
__device__ void unwrap_accumulate(
    const float* __restrict__ comp_a, const float* __restrict__ comp_b, int polar,
    const float2* __restrict__ s_ref, float* __restrict__ u, const unsigned char* __restrict__ flags,
    const double* __restrict__ prev_coeffs, int has_prev, int auto_mode, double outlier_rad,
    int nz, int ny, int nx, double* __restrict__ stats)
{
    const int Q = NStats<K>::Q;
    __shared__ double block_acc[2 * NStats<6>::Q];
    const int z = blockIdx.y;
    const int npix = ny * nx;
    for (int q = threadIdx.x; q < 2 * Q; q += blockDim.x) block_acc[q] = 0.0;
    __syncthreads();

    double acc[2 * Q];
#pragma unroll
    for (int q = 0; q < 2 * Q; ++q) acc[q] = 0.0;
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
        const float2 r = s_ref[idx];
        const float pr = sr * r.x + si * r.y;     // S * conj(S_ref)
        const float pi = si * r.x - sr * r.y;
        const float dphi = atan2f(pi, pr);
        float uu = dphi;
        if (has_prev) {
            const float k = rintf((u[idx] - dphi) / two_pi);
            uu = dphi + k * two_pi;
        }
        u[idx] = uu;

        const unsigned char f = flags[idx];
        double a[6];
        poly_basis<K>(p % nx, p / nx, nx, ny, a);
        const double w = (double)(sr * sr + si * si);
        double w_all, w_in;
        if (auto_mode) {
            w_all = ((f & FLAG_REF) && !(f & FLAG_HEATED)) ? w : 0.0;
            const double drift_prev = poly_eval<K>(pc, a);
            w_in = (fabs((double)uu - drift_prev) < outlier_rad) ? w_all : 0.0;
        } else {
            w_all = (f & FLAG_REF) ? w : 0.0;
            w_in = w_all;
        }
        const double ws[2] = {w_in, w_all};
#pragma unroll
        for (int s = 0; s < 2; ++s) {
            if (ws[s] > 0.0) {
                int q = s * Q;
#pragma unroll
                for (int i = 0; i < K; ++i)
#pragma unroll
                    for (int j = i; j < K; ++j) acc[q++] += ws[s] * a[i] * a[j];
#pragma unroll
                for (int i = 0; i < K; ++i) acc[q++] += ws[s] * a[i] * (double)uu;
                acc[q] += 1.0;
            }
        }
    }
    // warp reduction, then one shared atomic per warp, then one global atomic per block
    const unsigned full = 0xffffffffu;
#pragma unroll
    for (int q = 0; q < 2 * Q; ++q) {
        double v = acc[q];
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(full, v, off);
        if ((threadIdx.x & 31) == 0 && v != 0.0) atomicAdd(&block_acc[q], v);
    }
    __syncthreads();
    for (int q = threadIdx.x; q < 2 * Q; q += blockDim.x)
        if (block_acc[q] != 0.0) atomicAdd(&stats[(long long)z * 2 * Q + q], block_acc[q]);
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
    int nz, int ny, int nx)
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
        const float t = (f & FLAG_MASK) ? delta + body_temp_c : nan_f();
        temp_out[idx] = t;
        if (has_prev) dose[idx] += cem43_segment(temp_prev[idx], t, dt_min);
        if (first) {
            tmax[idx] = t;
        } else {
            const float m = tmax[idx];
            tmax[idx] = (isnan(m) || isnan(t)) ? nan_f() : fmaxf(m, t);
        }
        if (delta > heated_c) flags[idx] = f | FLAG_HEATED;
        if (is_baseline) {
            const double d = (double)delta;
            base_sum[idx] += d;
            base_sumsq[idx] += d * d;
        }
    }
}

#define UNWRAP_ENTRY(NAME, K)                                                                           \
extern "C" __global__ void NAME(                                                                        \
    const float* comp_a, const float* comp_b, int polar, const float2* s_ref, float* u,                 \
    const unsigned char* flags, const double* prev_coeffs, int has_prev, int auto_mode,                 \
    double outlier_rad, int nz, int ny, int nx, double* stats) {                                        \
    unwrap_accumulate<K>(comp_a, comp_b, polar, s_ref, u, flags, prev_coeffs, has_prev, auto_mode,      \
                         outlier_rad, nz, ny, nx, stats);                                               \
}

#define DOSE_ENTRY(NAME, K)                                                                             \
extern "C" __global__ void NAME(                                                                        \
    const float* u, unsigned char* flags, const double* coeffs, double to_celsius, float body_temp_c,   \
    float heated_c, float* temp_out, const float* temp_prev, int has_prev, double dt_min,               \
    double* dose, float* tmax, int first, int is_baseline, double* base_sum, double* base_sumsq,        \
    int nz, int ny, int nx) {                                                                           \
    temperature_dose<K>(u, flags, coeffs, to_celsius, body_temp_c, heated_c, temp_out, temp_prev,       \
                        has_prev, dt_min, dose, tmax, first, is_baseline, base_sum, base_sumsq,          \
                        nz, ny, nx);                                                                    \
}

UNWRAP_ENTRY(unwrap_accumulate_o0, 1)
UNWRAP_ENTRY(unwrap_accumulate_o1, 3)
UNWRAP_ENTRY(unwrap_accumulate_o2, 6)
DOSE_ENTRY(temperature_dose_o0, 1)
DOSE_ENTRY(temperature_dose_o1, 3)
DOSE_ENTRY(temperature_dose_o2, 6)
