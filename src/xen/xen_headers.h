// The one place that includes Xen's C headers. Include this instead of
// <xenctrl.h> & co. in src/xen/*.cc (never from a public header).
//
// Xen's public headers rely on GNU C: with __STRICT_ANSI__ defined (which
// -std=c++20 does) xen/hvm/save.h stops with "#error Anonymous
// structs/unions are a GNU extension" and xen/foreign/x86_64.h defines its
// alignment attribute as "FIXME". g++ and clang++ accept the extensions in
// C++ all the same, so the macro is hidden while the Xen headers are read.
// The C library's feature selection (features.h) was settled by the first
// standard header, which is included before.
//
// Thread safety: not applicable.

#ifndef P2BMIG_XEN_XEN_HEADERS_H_
#define P2BMIG_XEN_XEN_HEADERS_H_

#include <cstddef>
#include <cstdint>

#ifdef __STRICT_ANSI__
#define P2BMIG_XEN_STRICT_ANSI_WAS_DEFINED
#undef __STRICT_ANSI__
#endif

// xenctrl.h first: it defines __XEN_TOOLS__, without which the public
// headers that the others include leave out the tools-only declarations.
// Some of them (xendevicemodel.h) lack extern "C" guards of their own.
// clang-format off
extern "C" {
#include <xenctrl.h>
#include <xendevicemodel.h>
#include <xenforeignmemory.h>
#include <xentoollog.h>
}
// clang-format on

#ifdef P2BMIG_XEN_STRICT_ANSI_WAS_DEFINED
#define __STRICT_ANSI__ 1
#undef P2BMIG_XEN_STRICT_ANSI_WAS_DEFINED
#endif

#endif  // P2BMIG_XEN_XEN_HEADERS_H_
