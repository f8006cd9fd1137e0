//! AMDGPU module of the real crate: nothing in it is named from outside, so it is empty.
