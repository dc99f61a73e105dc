// Force-included into toml++ (TOMLKit's CTOML) in the fuzz build: its assertions report here
// instead of calling assert(), so that the one known failure can be told from new ones.
#ifndef IMGVOL_FUZZ_TOML_ASSERT_H
#define IMGVOL_FUZZ_TOML_ASSERT_H
#ifdef __cplusplus
extern "C" {
#endif
void imgvol_fuzz_toml_assert(const char *expr, const char *file, int line);
long imgvol_fuzz_toml_known_asserts(void);
#ifdef __cplusplus
}
#endif
#define TOML_ASSERT(expr) ((expr) ? (void)0 : imgvol_fuzz_toml_assert(#expr, __FILE__, __LINE__))
#endif
