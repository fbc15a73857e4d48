// The PKCS#11 (Cryptoki) interface from p11-kit's header, for loading any module with dlopen.
// Nothing is linked: the module is chosen at run time (`--pkcs11-module PATH`).
#ifndef CMKFS_CPKCS11_SHIM_H
#define CMKFS_CPKCS11_SHIM_H

#include <dlfcn.h>
#include <p11-kit/pkcs11.h>

// Swift cannot call a function pointer it got from `dlsym` as a `void *` without a bit cast of
// an unknown C function type; this does the cast in C, where the type is declared.
static inline CK_RV cmk_p11_get_function_list(void *symbol, CK_FUNCTION_LIST_PTR *list) {
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)symbol;
    return get(list);
}

#endif
