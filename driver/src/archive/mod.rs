//! Tar streams in and out of layer directories.
//!
//! `apply` turns an OCI layer tar into an overlay lower directory (whiteouts
//! become 0/0 char devices, opaque markers become `trusted.overlay.opaque`);
//! `write` does the reverse for commit and save; `split` keeps what an
//! imported tar needs to be rebuilt bit for bit.

pub mod apply;
pub mod beneath;
pub mod compression;
pub mod split;
pub mod write;

pub use apply::{apply_layer, AppliedLayer};
pub use write::write_layer_tar;

/// OCI whiteout prefix and opaque-directory marker.
pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub use crate::lowerstack::OVERLAY_OPAQUE_XATTR;
/// xattrs that steer overlayfs itself; never taken from or given to a tar.
pub const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";
