// Acoustic-window ray march for mrtherm: one thread per (element, focus) pair.
//
// Mirrors mrtherm.window.trace step by step: exact voxel traversal
// (Amanatides & Woo) of the segment element -> focus in voxel space, reason
// bits per voxel role, first-bone incidence angle against the smoothed-label
// normal, minimum distance to critical structures, and the status rules.
// Each thread adds its element's area to its focus's active area when the
// element is not blocked, and optionally stores its reason bits.

#define GAS 1
#define METAL 2
#define BONE_PREFOCAL 4
#define CRITICAL_ANGLE 8
#define SCAR 16
#define NO_PASS_ZONE 32
#define CRITICAL_CROSS 64
#define OUT_OF_VOLUME 128
#define CRITICAL_NEAR 256

#define ROLE_PASS 0
#define ROLE_GAS 1
#define ROLE_METAL 2
#define ROLE_BONE 3
#define ROLE_SCAR 4
#define ROLE_CRITICAL 5
#define ROLE_NOPASS 6

#define ZERO_SEGMENT_MM 1e-6

__device__ __forceinline__ double inf_d() { return __longlong_as_double(0x7ff0000000000000LL); }

extern "C" __global__ void raymarch_pairs(
    const unsigned char* __restrict__ labels, const unsigned char* __restrict__ role_lut,
    const float* __restrict__ edt_mm, const float* __restrict__ normals,
    const double* __restrict__ inv_affine,      // 3 x 4, row-major
    int nx, int ny, int nz,
    const double* __restrict__ elements,        // (E, 3) world mm
    const double* __restrict__ areas,           // (E,)
    int n_elements,
    const double* __restrict__ foci,            // (T, 3) world mm
    const double* __restrict__ focus_edt_mm,    // (T,)
    long long n_foci,
    double critical_angle_deg, double target_surface_mm, double critical_min_distance_mm,
    int blocking_bits, int degrading_bits,
    double* __restrict__ active_area,           // (T,) accumulated
    int write_pairs,                            // 1: store reasons and status per pair
    int* __restrict__ reasons_out,              // (T, E) when write_pairs
    signed char* __restrict__ status_out)       // (T, E) when write_pairs
{
    const long long pair = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (pair >= n_foci * (long long)n_elements) return;
    const int e = (int)(pair % n_elements);
    const long long fi = pair / n_elements;

    double p[3], f[3], c0[3], c1[3], d[3], unit[3];
    for (int a = 0; a < 3; ++a) { p[a] = elements[3 * e + a]; f[a] = foci[3 * fi + a]; }
    for (int r = 0; r < 3; ++r) {
        c0[r] = inv_affine[4 * r] * p[0] + inv_affine[4 * r + 1] * p[1] + inv_affine[4 * r + 2] * p[2] + inv_affine[4 * r + 3];
        c1[r] = inv_affine[4 * r] * f[0] + inv_affine[4 * r + 1] * f[1] + inv_affine[4 * r + 2] * f[2] + inv_affine[4 * r + 3];
        d[r] = c1[r] - c0[r];
    }
    const double sx = f[0] - p[0], sy = f[1] - p[1], sz = f[2] - p[2];
    const double length = sqrt(sx * sx + sy * sy + sz * sz);
    unit[0] = length > 0 ? sx / length : 0.0;
    unit[1] = length > 0 ? sy / length : 0.0;
    unit[2] = length > 0 ? sz / length : 0.0;

    const int n[3] = {nx, ny, nz};
    double t_enter = 0.0, t_exit = 1.0;
    for (int a = 0; a < 3; ++a) {
        const double lo = -0.5, hi = n[a] - 0.5;
        double tmin, tmax;
        if (d[a] != 0.0) {
            const double ta = (lo - c0[a]) / d[a], tb = (hi - c0[a]) / d[a];
            tmin = fmin(ta, tb);
            tmax = fmax(ta, tb);
        } else if (c0[a] >= lo && c0[a] <= hi) {
            tmin = -inf_d(); tmax = inf_d();
        } else {
            tmin = inf_d(); tmax = -inf_d();
        }
        t_enter = fmax(t_enter, tmin);
        t_exit = fmin(t_exit, tmax);
    }
    const bool inside = t_enter < t_exit;
    const double out_len = inside ? length * (1.0 - (t_exit - t_enter)) : length;
    int reasons = out_len > ZERO_SEGMENT_MM ? OUT_OF_VOLUME : 0;
    double min_crit = inf_d();

    if (inside) {
        long long v[3];
        int step[3];
        double t_delta[3], t_max[3];
        for (int a = 0; a < 3; ++a) {
            const double s = c0[a] + t_enter * d[a];
            double fl = floor(s + 0.5);
            fl = fmin(fmax(fl, 0.0), (double)(n[a] - 1));
            v[a] = (long long)fl;
            step[a] = d[a] > 0 ? 1 : (d[a] < 0 ? -1 : 0);
            t_delta[a] = d[a] != 0.0 ? 1.0 / fabs(d[a]) : inf_d();
            t_max[a] = d[a] != 0.0 ? ((double)v[a] + 0.5 * step[a] - c0[a]) / d[a] : inf_d();
        }
        double t = t_enter;
        bool bone_seen = false;
        while (true) {
            int axis = 0;
            if (t_max[1] < t_max[axis]) axis = 1;
            if (t_max[2] < t_max[axis]) axis = 2;
            const double t_axis = t_max[axis];
            const double t_next = fmin(t_axis, t_exit);
            const double seg_mm = (t_next - t) * length;
            if (seg_mm > ZERO_SEGMENT_MM) {
                const long long idx = (v[2] * ny + v[1]) * nx + v[0];
                const int role = role_lut[labels[idx]];
                min_crit = fmin(min_crit, (double)edt_mm[idx]);
                const double remaining = (1.0 - t) * length;
                if (role == ROLE_GAS) reasons |= GAS;
                else if (role == ROLE_METAL) reasons |= METAL;
                else if (role == ROLE_SCAR) reasons |= SCAR;
                else if (role == ROLE_CRITICAL) reasons |= CRITICAL_CROSS;
                else if (role == ROLE_NOPASS) reasons |= NO_PASS_ZONE;
                else if (role == ROLE_BONE) {
                    if (!bone_seen) {
                        const double nxv = normals[3 * idx], nyv = normals[3 * idx + 1], nzv = normals[3 * idx + 2];
                        const double nn = sqrt(nxv * nxv + nyv * nyv + nzv * nzv);
                        bone_seen = true;
                        if (nn > 0.5 && remaining <= target_surface_mm) {
                            double c = fabs(nxv * unit[0] + nyv * unit[1] + nzv * unit[2]);
                            c = fmin(fmax(c, 0.0), 1.0);
                            const double ang = acos(c) * (180.0 / 3.141592653589793);
                            if (ang > critical_angle_deg) reasons |= CRITICAL_ANGLE;
                        }
                    }
                    if (remaining > target_surface_mm) reasons |= BONE_PREFOCAL;
                }
            }
            v[axis] += step[axis];
            t_max[axis] = t_axis + t_delta[axis];
            t = t_next;
            if (t_next >= t_exit - 1e-12) break;
            if (v[axis] < 0 || v[axis] >= n[axis]) break;
        }
    }
    if (!(reasons & CRITICAL_CROSS) && min_crit < critical_min_distance_mm && min_crit < focus_edt_mm[fi] - 1e-6)
        reasons |= CRITICAL_NEAR;
    const int status = (reasons & blocking_bits) ? 2 : ((reasons & degrading_bits) ? 1 : 0);
    if (status != 2) atomicAdd(&active_area[fi], areas[e]);
    if (write_pairs) {
        reasons_out[pair] = reasons;
        status_out[pair] = (signed char)status;
    }
}
