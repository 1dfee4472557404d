//! strata: an overlayfs container storage driver.
//!
//! An image is a stack of read-only, content-addressed layers shared
//! between images; a container adds one writable layer on top, where every
//! change lands (overlayfs copies a file up on its first modification).
//! Volumes live outside the layer area and bypass copy-on-write.

pub mod archive;
pub mod blobs;
pub mod changes;
pub mod commit;
pub mod containers;
pub mod digest;
pub mod error;
pub mod export;
pub mod extract;
pub mod fsutil;
pub mod image;
pub mod images;
pub mod import;
pub mod layers;
pub mod lowerstack;
pub mod mount;
pub mod progress;
pub mod pull;
pub mod push;
pub mod quota;
pub mod recovery;
pub mod registry;
pub mod sizes;
pub mod snapshots;
pub mod snapshotter;
pub mod store;
pub mod testing;
pub mod volumes;

pub use error::{Error, Result};
pub use store::Store;
