//! The crate's error type.

use crate::runtime::Backend;

/// Everything that can go wrong in `ft-kernels`, grouped by where it comes from: the input, a
/// tensor assembled from parts, or the device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    // --- Input ---------------------------------------------------------------------------------
    /// The tensor has no elements; NF4 needs at least one block.
    #[error("cannot quantize an empty tensor (shape {shape:?}): NF4 needs at least one element")]
    EmptyTensor {
        /// The shape that was given.
        shape: Vec<usize>,
    },
    /// The value count does not match the shape.
    #[error(
        "shape {shape:?} holds {expected} elements but {found} values were given: \
         pass the values row-major, exactly one per element"
    )]
    ShapeMismatch {
        /// The shape that was given.
        shape: Vec<usize>,
        /// The product of the shape, or `usize::MAX` where it overflows.
        expected: usize,
        /// The number of values given.
        found: usize,
    },
    /// NaN or an infinity in the input: bitsandbytes would spread it over the whole block.
    #[error(
        "value {value} at flat index {index} is not finite: NF4 blocks scale by their absmax, \
         so one NaN or infinity poisons all {blocksize} values of its block; clean the weights first"
    )]
    NonFinite {
        /// Row-major index of the first offending value.
        index: usize,
        /// The value itself.
        value: f32,
        /// The block size it would have poisoned.
        blocksize: usize,
    },
    /// A block size bitsandbytes does not accept.
    #[error(
        "block size {blocksize} is not supported: use one of 32, 64, 128, 256, 512, 1024, 2048, 4096"
    )]
    UnsupportedBlocksize {
        /// The block size that was given.
        blocksize: usize,
    },

    // --- Parts ---------------------------------------------------------------------------------
    /// A buffer of an NF4 tensor assembled from parts has the wrong length.
    #[error(
        "NF4 part `{part}` has {found} entries, expected {expected} for shape {shape:?} with block \
         size {blocksize}; the parts do not belong together"
    )]
    PartLength {
        /// Which buffer: `codes`, `absmax`, `absmax codes` or `absmax scales`.
        part: &'static str,
        /// The length the shape and block size call for.
        expected: usize,
        /// The length found.
        found: usize,
        /// The tensor's shape.
        shape: Vec<usize>,
        /// The tensor's block size.
        blocksize: usize,
    },
    /// A padding nibble or an absmax value that bitsandbytes could not have produced.
    #[error("NF4 part `{part}` is invalid: {reason}")]
    InvalidPart {
        /// Which buffer.
        part: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    // --- Device --------------------------------------------------------------------------------
    /// The build does not link the runtime asked for.
    #[error(
        "ft-kernels was built without the `{feature}` feature, so the {backend} runtime is not available: rebuild with `--features {feature}`"
    )]
    RuntimeNotLinked {
        /// The runtime asked for.
        backend: Backend,
        /// The crate feature that links it.
        feature: &'static str,
    },
    /// The runtime is linked but the machine has no such device.
    #[error("no {backend} device on this machine ({detail})")]
    NoDevice {
        /// The runtime asked for.
        backend: Backend,
        /// What the runtime reported.
        detail: String,
    },
    /// A tensor too large for the kernel's 32-bit indexing.
    #[error(
        "{what} has {len} elements; the kernel indexes with 32 bits, so at most {max} fit: split the tensor"
    )]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its element count.
        len: usize,
        /// The largest count supported.
        max: usize,
    },
    /// A device buffer does not have the size the launch needs.
    #[error("device buffer `{buffer}` holds {found} bytes, the launch needs at least {expected}")]
    BufferSize {
        /// Which buffer.
        buffer: &'static str,
        /// Bytes needed.
        expected: u64,
        /// Bytes the handle has.
        found: u64,
    },
    /// The device reported an error while running or reading back a kernel.
    #[error("device error during {op}")]
    Device {
        /// What was being done.
        op: &'static str,
        /// The runtime's error.
        #[source]
        source: cubecl::server::ServerError,
    },
}
