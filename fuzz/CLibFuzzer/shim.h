// libFuzzer's entry for programs that have their own main (compiler-rt's FuzzerInterface.h),
// linked in by -sanitize=fuzzer. See fuzz/driver/Driver.swift for why the driver needs it.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *Data, size_t Size));
