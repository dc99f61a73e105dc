#ifndef IMGVOL_CISAL_SHIM_H
#define IMGVOL_CISAL_SHIM_H
#include <isa-l/igzip_lib.h>
#include <isa-l/crc64.h>
#endif
