#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "toml_assert.h"

static long known;

/// The known bug (see Fuzz/README.md, "Found"): toml++ 3.4.0's parse_key asserts that a table
/// header's key starts with a bare-key character or a quote, which the header parser never
/// checked. It is counted (the parse then fails with toml++'s own error); any other assertion
/// aborts, and libFuzzer reports it.
void imgvol_fuzz_toml_assert(const char *expr, const char *file, int line) {
    if (strstr(expr, "is_bare_key_character(*cp) || is_string_delimiter(*cp)") && strstr(file, "toml.hpp")) {
        known++;
        return;
    }
    fprintf(stderr, "toml++ assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

long imgvol_fuzz_toml_known_asserts(void) { return known; }
