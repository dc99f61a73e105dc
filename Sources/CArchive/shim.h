#ifndef IMGVOL_CARCHIVE_SHIM_H
#define IMGVOL_CARCHIVE_SHIM_H
#include <archive.h>
#include <archive_entry.h>
#endif
