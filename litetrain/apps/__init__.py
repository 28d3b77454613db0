"""Applications built on the library: transfer learning on the device (personalize/) and the
demo (demo/)."""
