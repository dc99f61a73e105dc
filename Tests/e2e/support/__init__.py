"""Support code for imgvol's end-to-end tests (registry, layouts, proxy, trees)."""
