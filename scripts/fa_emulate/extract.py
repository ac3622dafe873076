# Copies the forward kernels out of cuda/flash_attention.cu for scripts/fa_emulate/run.sh.
import re, sys
s = open(sys.argv[1]).read()
def between(a, b):
    i = s.index(a); j = s.index(b, i); return s[i:j]
parts = [
  between("struct AttnDims {", "// ---------------------------------------------------------------------------------------\n// Reference kernels"),
  between("constexpr int kBlockN = 64;", "// The forward grid:"),
  between("constexpr float kRescaleSlack", "template <int kD, bool kLazyRescale, bool kHeavyFirst, int kN = 64>\nvoid launch_fwd_tuned"),
]
t = "\n".join(parts)
names = ["smem_u32","cp_async16","cp_async_commit","cp_async_wait","ldmatrix_x4","ldmatrix_x4_trans","ldsm_x4","ldsm_x4_trans","cp_async16_u32","st_shared_zero16","mma_bf16","fast_exp2"]
for n in names:
    one = re.compile(r'__device__ __forceinline__ [\w ]+ ' + n + r'\([^\n]*\{[^\n]*\}\n')
    t, k = one.subn('', t, count=1)
    if k == 0:
        pat = re.compile(r'(template <int N>\n)?__device__ __forceinline__ [\w ]+ ' + n + r'\((?:(?!\n\}\n).)*?\n\}\n', re.S)
        t, k = pat.subn('', t, count=1)
    assert k == 1, n
t = t.replace("extern __shared__ __align__(16) unsigned char smem_raw[];", "unsigned char* smem_raw = emu::smem();")
print('#include "emu.h"\n#include <algorithm>\nnamespace fa {\n' + t + '\n}  // namespace fa\n')
