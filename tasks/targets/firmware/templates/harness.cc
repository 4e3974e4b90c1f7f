// edgeflow's firmware harness: the bundle's model (model_data.cc, unchanged) run by the
// TensorFlow Lite Micro interpreter on every image of the host file inputs.bin (each
// image the model's input tensor, already quantised, back to back), with the results
// written to the host file results.txt through semihosting, one fact per line:
//   edgeflow-firmware 1
//   input_bytes N / output_count K / output_quantization SCALE_E9 ZERO_POINT
//   declared_arena BYTES (kTensorArenaSize) / arena_size BYTES (the buffer) /
//   arena_needed BYTES / arena_used BYTES
//   calibration INSTRUCTIONS TICKS
//   image INDEX TICKS SCORE... (the output tensor's K int8 values)
//   done IMAGES
// or, at the first failure, "error WHAT" (and the run exits 1).
// arena_needed is the smallest arena (a multiple of 16 bytes, from a 16-byte aligned
// buffer) in which the interpreter allocates the model's tensors, found by bisection on
// the target: arena_used_bytes() counts the bytes in use but not the alignment padding
// at the arena's ends, so a buffer of exactly that size may not allocate. The images
// then run in an arena of exactly arena_needed bytes, and arena_used is that
// interpreter's arena_used_bytes().
// Time is SysTick's: run under -icount shift=0 (one instruction, one virtual ns) it
// counts instructions in steps of the board's clock (tasks/targets/firmware/run.py).
#include <stddef.h>
#include <stdint.h>

#include <new>

#include "edgeflow_ops.h"
#include "model_data.h"
#include "semihosting.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

#ifndef EDGEFLOW_ARENA_BYTES
#error "EDGEFLOW_ARENA_BYTES (the arena buffer: the largest arena tried) is not defined"
#endif
#ifndef EDGEFLOW_MODEL
#error "EDGEFLOW_MODEL (the model array's name in model_data.h) is not defined"
#endif

namespace {

constexpr size_t kArenaStep = 16;
// The bisection below halves between multiples of kArenaStep: it ends only for those.
static_assert(EDGEFLOW_ARENA_BYTES % kArenaStep == 0, "EDGEFLOW_ARENA_BYTES: a multiple of 16");
alignas(16) uint8_t g_arena[EDGEFLOW_ARENA_BYTES];
// Room for one interpreter at a time: constructed in place for each arena size tried.
alignas(tflite::MicroInterpreter) uint8_t g_interpreter[sizeof(tflite::MicroInterpreter)];
int g_results = -1;

void write_text(const char* text) {
  size_t length = 0;
  while (text[length] != '\0') ++length;
  semihost_write(g_results, text, length);
}

void write_int(int64_t value) {
  char digits[24];
  int at = sizeof digits;
  digits[--at] = '\0';
  const bool negative = value < 0;
  uint64_t magnitude = negative ? 0 - static_cast<uint64_t>(value) : static_cast<uint64_t>(value);
  do {
    digits[--at] = static_cast<char>('0' + magnitude % 10);
    magnitude /= 10;
  } while (magnitude != 0);
  if (negative) digits[--at] = '-';
  write_text(digits + at);
}

void write_fact(const char* name, int64_t value) {
  write_text(name);
  write_text(" ");
  write_int(value);
  write_text("\n");
}

int fail(const char* what) {
  write_text("error ");
  write_text(what);
  write_text("\n");
  semihost_close(g_results);
  return 1;
}

// SysTick as a 64-bit counter of processor-clock ticks: the 24-bit down-counter wraps
// every 2^24 ticks, counted by its interrupt.
constexpr uint32_t kSysTickReload = 0xFFFFFFu;
volatile uint32_t* const kSysTickControl = reinterpret_cast<volatile uint32_t*>(0xE000E010u);
volatile uint32_t* const kSysTickReloadValue = reinterpret_cast<volatile uint32_t*>(0xE000E014u);
volatile uint32_t* const kSysTickCurrent = reinterpret_cast<volatile uint32_t*>(0xE000E018u);
volatile uint32_t g_wraps = 0;

void start_ticks() {
  *kSysTickReloadValue = kSysTickReload;
  *kSysTickCurrent = 0;
  // ENABLE, TICKINT (count wraps), CLKSOURCE = the processor clock.
  *kSysTickControl = 0x7u;
  // Cleared, the counter reads 0 until its first tick loads the reload value; reading
  // from then on, every count is the ticks since that load.
  while (*kSysTickCurrent == 0) {
  }
}

uint64_t ticks() {
  uint32_t wraps, current;
  do {
    wraps = g_wraps;
    current = *kSysTickCurrent;
  } while (wraps != g_wraps);
  return static_cast<uint64_t>(wraps) * (kSysTickReload + 1ull) + (kSysTickReload - current);
}

// Exactly 2 * kCalibrationLoops + 2 instructions between the two reads of the counter
// (a SUBS and a taken BNE per turn; the MOV and the last, untaken BNE), so the ticks
// they take give the instructions per tick.
constexpr uint32_t kCalibrationLoops = 2000000u;

void calibrate() {
  uint32_t left = kCalibrationLoops;
  const uint64_t before = ticks();
  __asm__ volatile(
      "1:\n\t"
      "subs %0, %0, #1\n\t"
      "bne 1b\n\t"
      : "+r"(left)
      :
      : "cc");
  const uint64_t after = ticks();
  write_text("calibration ");
  write_int(2ll * kCalibrationLoops);
  write_text(" ");
  write_int(static_cast<int64_t>(after - before));
  write_text("\n");
}

using Resolver = tflite::MicroMutableOpResolver<kEdgeflowOpCount>;

// An interpreter of the model in the first arena_bytes of g_arena, its tensors allocated;
// nullptr (and nothing left constructed) when they do not fit.
tflite::MicroInterpreter* allocated(const tflite::Model* model, const Resolver& resolver,
                                    size_t arena_bytes) {
  auto* interpreter =
      new (g_interpreter) tflite::MicroInterpreter(model, resolver, g_arena, arena_bytes);
  if (interpreter->AllocateTensors() == kTfLiteOk) return interpreter;
  interpreter->~MicroInterpreter();
  return nullptr;
}

// The smallest multiple of kArenaStep in which the tensors allocate, or 0 when even the
// whole buffer is too small. More room never makes allocation fail.
size_t smallest_arena(const tflite::Model* model, const Resolver& resolver) {
  size_t fails = 0, fits = sizeof g_arena;
  tflite::MicroInterpreter* interpreter = allocated(model, resolver, fits);
  if (interpreter == nullptr) return 0;
  interpreter->~MicroInterpreter();
  while (fits - fails > kArenaStep) {
    const size_t middle = (fails + fits) / 2 / kArenaStep * kArenaStep;
    interpreter = allocated(model, resolver, middle);
    if (interpreter == nullptr) {
      fails = middle;
    } else {
      interpreter->~MicroInterpreter();
      fits = middle;
    }
  }
  return fits;
}

}  // namespace

extern "C" void edgeflow_systick_handler(void) { g_wraps = g_wraps + 1; }

int main() {
  g_results = semihost_open("results.txt", 1);
  if (g_results < 0) return 1;
  write_fact("edgeflow-firmware", 1);
  start_ticks();
  calibrate();

  const tflite::Model* model = tflite::GetModel(EDGEFLOW_MODEL);
  if (model->version() != TFLITE_SCHEMA_VERSION) return fail("schema: the model's schema version is not this TFLM's");
  static Resolver resolver;
  if (EdgeflowAddOps(resolver) != kTfLiteOk) return fail("resolver: an op could not be added");
  const size_t arena_needed = smallest_arena(model, resolver);
  if (arena_needed == 0) return fail("allocate: the tensors do not fit the whole arena buffer");
  tflite::MicroInterpreter* interpreter = allocated(model, resolver, arena_needed);
  if (interpreter == nullptr) return fail("allocate: the smallest arena found does not allocate again");
  TfLiteTensor* input = interpreter->input(0);
  TfLiteTensor* output = interpreter->output(0);
  if (input->type != kTfLiteInt8 || output->type != kTfLiteInt8) {
    return fail("types: the model's input and output must be int8");
  }
  const size_t input_bytes = input->bytes;
  const size_t output_count = output->bytes;
  write_fact("input_bytes", static_cast<int64_t>(input_bytes));
  write_fact("output_count", static_cast<int64_t>(output_count));
  write_text("output_quantization ");
  write_int(static_cast<int64_t>(static_cast<double>(output->params.scale) * 1e9 + 0.5));
  write_text(" ");
  write_int(output->params.zero_point);
  write_text("\n");
  write_fact("declared_arena", kTensorArenaSize);
  write_fact("arena_size", static_cast<int64_t>(sizeof g_arena));
  write_fact("arena_needed", static_cast<int64_t>(arena_needed));
  write_fact("arena_used", static_cast<int64_t>(interpreter->arena_used_bytes()));

  const int inputs = semihost_open("inputs.bin", 0);
  if (inputs < 0) return fail("inputs: inputs.bin cannot be opened");
  const long length = semihost_length(inputs);
  if (length < 0 || static_cast<size_t>(length) % input_bytes != 0) {
    return fail("inputs: inputs.bin is not a whole number of input tensors");
  }
  const long images = length / static_cast<long>(input_bytes);
  for (long image = 0; image < images; ++image) {
    if (semihost_read(inputs, input->data.int8, input_bytes) != input_bytes) {
      return fail("inputs: inputs.bin ended early");
    }
    const uint64_t before = ticks();
    const TfLiteStatus invoked = interpreter->Invoke();
    const uint64_t after = ticks();
    if (invoked != kTfLiteOk) return fail("invoke: the interpreter failed");
    write_text("image ");
    write_int(image);
    write_text(" ");
    write_int(static_cast<int64_t>(after - before));
    for (size_t k = 0; k < output_count; ++k) {
      write_text(" ");
      write_int(output->data.int8[k]);
    }
    write_text("\n");
  }
  semihost_close(inputs);
  write_fact("done", images);
  semihost_close(g_results);
  return 0;
}
