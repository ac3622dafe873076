// CPU emulation harness of scripts/fa_emulate/run.sh (a development tool, not part of the build).
#include "kernels.inc"
#include <random>
#include <string>

using fa::AttnDims;
struct Case { int64_t B, T, H, Hkv, D, window; double ramp; };

static double rel(const std::vector<double>& a, const std::vector<double>& b, const std::vector<bool>* only = nullptr) {
  double n = 0, d = 0;
  for (size_t i = 0; i < a.size(); ++i) { n += (a[i] - b[i]) * (a[i] - b[i]); d += b[i] * b[i]; }
  return std::sqrt(n / d);
}

int main(int argc, char** argv) {
  const bool quick = argc > 1;
  std::vector<Case> cases = {{1, 200, 2, 1, 128, 0, 0}, {1, 130, 2, 1, 64, 17, 0}, {2, 77, 2, 1, 128, 0, 0},
                             {1, 65, 2, 1, 80, 64, 0}, {1, 300, 2, 1, 64, 0, 1.0 / 64}, {1, 1, 1, 1, 64, 0, 0},
                             {1, 333, 2, 2, 128, 200, 1.0 / 64}};
  int fails = 0;
  for (const Case& c : cases) {
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> u2(-2, 2), u1(-1, 1);
    auto mk = [&](int64_t n, std::uniform_real_distribution<float>& d) {
      std::vector<__nv_bfloat16> x(n); for (auto& e : x) e.x = f2bf(d(rng)); return x; };
    auto q = mk(c.B * c.T * c.H * c.D, u2), k = mk(c.B * c.T * c.Hkv * c.D, u2), v = mk(c.B * c.T * c.Hkv * c.D, u1);
    if (c.ramp > 0)
      for (int64_t b = 0; b < c.B; ++b) for (int64_t t = 0; t < c.T; ++t) for (int64_t i = 0; i < c.Hkv * c.D; ++i) {
        auto& e = k[(b * c.T + t) * c.Hkv * c.D + i]; e.x = f2bf(bf2f(e.x) * float(1 + t * c.ramp)); }
    const double scale = 1.0 / std::sqrt(double(c.D));
    AttnDims a{c.B, c.T, c.H, c.Hkv, c.D, c.window, float(scale)};
    // naive f64
    const int64_t G = c.H / c.Hkv;
    std::vector<double> o_ref(c.B * c.T * c.H * c.D), lse_ref(c.B * c.H * c.T);
    for (int64_t b = 0; b < c.B; ++b) for (int64_t h = 0; h < c.H; ++h) for (int64_t t = 0; t < c.T; ++t) {
      const int64_t hk = h / G, s0 = c.window > 0 ? std::max<int64_t>(0, t - c.window + 1) : 0;
      std::vector<double> p(t + 1); double m = -1e300;
      for (int64_t s = s0; s <= t; ++s) { double x = 0; for (int64_t d = 0; d < c.D; ++d)
        x += bf2f(q[((b * c.T + t) * c.H + h) * c.D + d].x) * bf2f(k[((b * c.T + s) * c.Hkv + hk) * c.D + d].x);
        p[s] = x * scale; m = std::max(m, p[s]); }
      double l = 0; for (int64_t s = s0; s <= t; ++s) l += std::exp(p[s] - m);
      lse_ref[(b * c.H + h) * c.T + t] = m + std::log(l);
      for (int64_t s = s0; s <= t; ++s) for (int64_t d = 0; d < c.D; ++d)
        o_ref[((b * c.T + t) * c.H + h) * c.D + d] += std::exp(p[s] - m) / l * bf2f(v[((b * c.T + s) * c.Hkv + hk) * c.D + d].x);
    }
    std::vector<std::vector<double>> outs;
    for (int var = 0; var < 7; ++var) {
      if (quick && var != 0 && var != 4 && var != 6) continue;
      std::vector<__nv_bfloat16> o(q.size(), __nv_bfloat16{0x7fc0});
      std::vector<float> lse(c.B * c.H * c.T, NAN);
      const bool heavy = var == 1 || var == 3 || var == 4 || var == 6;
      const unsigned tiles = (c.T + 127) / 128;
      Dim3 grid = heavy ? Dim3{unsigned(c.B * c.H), tiles, 1} : Dim3{tiles, unsigned(c.B * c.H), 1};
      auto run = [&](auto kD_tag) {
        constexpr int kD = decltype(kD_tag)::value;
        const size_t smem = size_t(128 + 4 * (var == 6 ? 32 : 64)) * (kD + 8) * 2;
        auto* pq = q.data(); auto* pk = k.data(); auto* pv = v.data(); auto* po = o.data(); float* pl = lse.data();
        emu_launch(grid, 128, smem, [&] {
          switch (var) {
            case 0: fa::fa_fwd_tc_kernel<kD, 4, 2, 64, false>(pq, pk, pv, po, pl, a); break;
            case 1: fa::fa_fwd_tc_kernel<kD, 4, 2, 64, true>(pq, pk, pv, po, pl, a); break;
            case 2: fa::fa_fwd_tuned_kernel<kD, false, false>(pq, pk, pv, po, pl, a); break;
            case 3: fa::fa_fwd_tuned_kernel<kD, false, true>(pq, pk, pv, po, pl, a); break;
            case 4: fa::fa_fwd_tuned_kernel<kD, true, true>(pq, pk, pv, po, pl, a); break;
            case 5: fa::fa_fwd_tuned_kernel<kD, true, false>(pq, pk, pv, po, pl, a); break;
            default: fa::fa_fwd_tuned_kernel<kD, true, true, 32>(pq, pk, pv, po, pl, a); break;
          }
        });
      };
      if (c.D <= 64) run(std::integral_constant<int, 64>{}); else run(std::integral_constant<int, 128>{});
      std::vector<double> od(o.size()), ld(lse.size());
      bool finite = true;
      for (size_t i = 0; i < o.size(); ++i) { od[i] = bf2f(o[i].x); finite &= std::isfinite(od[i]); }
      for (size_t i = 0; i < lse.size(); ++i) { ld[i] = lse[i]; finite &= std::isfinite(ld[i]); }
      const double eo = rel(od, o_ref), el = rel(ld, lse_ref);
      const bool ok = finite && eo < 1e-2 && el < 1e-5;
      fails += !ok;
      std::printf("B%lld T%lld H%lld/%lld D%lld w%lld ramp%g variant %d: o %.2e lse %.2e %s%s\n", (long long)c.B,
                  (long long)c.T, (long long)c.H, (long long)c.Hkv, (long long)c.D, (long long)c.window, c.ramp, var, eo, el,
                  finite ? "" : "NONFINITE ", ok ? "ok" : "FAIL");
      std::fflush(stdout);
    }
  }
  std::printf("%d failures\n", fails);
  return fails != 0;
}
