// CUPTI activity tracer for any CUDA process (a benchmark helper; the device's nsys cannot
// import its own traces). Loaded through CUDA's injection hook, so the traced binary is
// unchanged:
//   CUDA_INJECTION64_PATH=build/lib/liblizard_kernel_trace.so LIZARD_TRACE_OUT=t.jsonl CMD...
// then `python3 scripts/kernel_trace.py trace.jsonl` (scripts/kernel_trace.sh does both).
// One JSON line per activity: GPU work (kernels, memcpy, memset; start and end in ns on the
// device clock CUPTI maps to the host's) and the runtime API calls that can stall the stream or
// the host (synchronizations, allocations, copies; launches are only counted, they are
// thousands per step). Driver API records are left off: they would double the tracing cost per
// launch, and the traced run should stay close to the untraced one (compare its step time).
// Buffers are flushed at exit.
#include <cupti.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

namespace {

std::FILE* g_out = nullptr;
std::mutex g_mu;
std::atomic<uint64_t> g_launches{0};
constexpr size_t kBufferBytes = 16u << 20;

void fail(const char* what, CUptiResult r) {
  const char* msg = nullptr;
  cuptiGetResultString(r, &msg);
  std::fprintf(stderr, "kernel_trace: %s failed: %s\n", what, msg ? msg : "?");
}

#define TRACE_CHECK(call)                     \
  do {                                        \
    CUptiResult r_ = (call);                  \
    if (r_ != CUPTI_SUCCESS) fail(#call, r_); \
  } while (0)

/// Writes s as a JSON string body (names of templated kernels carry quotes rarely, but '<',
/// ',' and spaces often; only '"' and '\' need escaping).
void put_json_string(std::FILE* f, const char* s) {
  std::fputc('"', f);
  for (; s && *s; ++s) {
    if (*s == '"' || *s == '\\') std::fputc('\\', f);
    if (static_cast<unsigned char>(*s) >= 0x20) std::fputc(*s, f);
  }
  std::fputc('"', f);
}

/// Runtime/driver calls worth a line: everything that is not a plain launch or event record.
bool interesting_api(const char* name) {
  if (!name) return false;
  static const char* const kQuiet[] = {"LaunchKernel", "EventRecord", "GetLastError",
                                       "PeekAtLastError", "GetDevice", "SetDevice",
                                       "FuncGetAttributes", "FuncSetAttribute", "StreamGetCapture",
                                       "GetDeviceCount", "DriverGetVersion", "OccupancyMax",
                                       "DeviceGetAttribute", "CtxGetCurrent", "EventQuery",
                                       "StreamIsCapturing", "GetFuncBySymbol", "LaunchKernelEx"};
  for (const char* q : kQuiet)
    if (std::strstr(name, q)) return false;
  return true;
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = kBufferBytes;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  std::lock_guard<std::mutex> lock(g_mu);
  CUpti_Activity* rec = nullptr;
  while (g_out && cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
    switch (rec->kind) {
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
      case CUPTI_ACTIVITY_KIND_KERNEL: {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
        std::fprintf(g_out, "{\"k\":\"kernel\",\"s\":%llu,\"e\":%llu,\"st\":%u,\"g\":%u,\"b\":%u,\"n\":",
                     static_cast<unsigned long long>(k->start),
                     static_cast<unsigned long long>(k->end), k->streamId,
                     k->gridX * k->gridY * k->gridZ, k->blockX * k->blockY * k->blockZ);
        put_json_string(g_out, k->name);
        std::fputs("}\n", g_out);
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(rec);
        std::fprintf(g_out, "{\"k\":\"memcpy\",\"s\":%llu,\"e\":%llu,\"st\":%u,\"bytes\":%llu,\"kind\":%u}\n",
                     static_cast<unsigned long long>(m->start),
                     static_cast<unsigned long long>(m->end), m->streamId,
                     static_cast<unsigned long long>(m->bytes), static_cast<unsigned>(m->copyKind));
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(rec);
        std::fprintf(g_out, "{\"k\":\"memset\",\"s\":%llu,\"e\":%llu,\"st\":%u,\"bytes\":%llu}\n",
                     static_cast<unsigned long long>(m->start),
                     static_cast<unsigned long long>(m->end), m->streamId,
                     static_cast<unsigned long long>(m->bytes));
        break;
      }
      case CUPTI_ACTIVITY_KIND_RUNTIME: {
        const auto* a = reinterpret_cast<const CUpti_ActivityAPI*>(rec);
        const char* name = nullptr;
        cuptiGetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, a->cbid, &name);
        if (!interesting_api(name)) {
          ++g_launches;
          break;
        }
        std::fprintf(g_out, "{\"k\":\"api\",\"s\":%llu,\"e\":%llu,\"n\":",
                     static_cast<unsigned long long>(a->start),
                     static_cast<unsigned long long>(a->end));
        put_json_string(g_out, name);
        std::fputs("}\n", g_out);
        break;
      }
      default:
        break;
    }
  }
  size_t dropped = 0;
  cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped);
  if (dropped) std::fprintf(stderr, "kernel_trace: %zu records dropped\n", dropped);
  std::free(buffer);
}

void at_exit() {
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_out) return;
  std::fprintf(g_out, "{\"k\":\"summary\",\"quiet_api_calls\":%llu}\n",
               static_cast<unsigned long long>(g_launches.load()));
  std::fclose(g_out);
  g_out = nullptr;
}

}  // namespace

/// CUDA calls this once, at initialisation, for the library named by CUDA_INJECTION64_PATH.
extern "C" int InitializeInjection(void) {
  const char* path = std::getenv("LIZARD_TRACE_OUT");
  const std::string out = path && *path ? path : "kernel_trace.jsonl";
  g_out = std::fopen(out.c_str(), "w");
  if (!g_out) {
    std::fprintf(stderr, "kernel_trace: cannot open %s for writing\n", out.c_str());
    return 0;
  }
  TRACE_CHECK(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed));
  TRACE_CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
  TRACE_CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY));
  TRACE_CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET));
  TRACE_CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_RUNTIME));
  std::atexit(at_exit);
  std::fprintf(stderr, "kernel_trace: writing %s\n", out.c_str());
  return 1;
}
