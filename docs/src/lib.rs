//! The demandflow guide and README, compiled.
//!
//! This unpublished crate exists so that the code in the prose documentation is
//! checked like the code in the crates: each chapter under `docs/guide/`, and the
//! repository's `README.md`, is included below as the documentation of an empty
//! module, which makes every ```` ```rust ```` block in it a doctest. Run them with
//!
//! ```text
//! cargo test -p demandflow-docs --doc
//! ```
//!
//! (`cargo test --workspace` runs them too). Read the chapters on GitHub, or here
//! with `cargo doc -p demandflow-docs --open`, where hidden setup lines are hidden.
//!
//! To add a chapter, write `docs/guide/NN-name.md` and include it below.

#[doc = include_str!("../guide/01-first-pipeline.md")]
pub mod first_pipeline {}

#[doc = include_str!("../guide/15-observing.md")]
pub mod observing {}

#[doc = include_str!("../../README.md")]
pub mod readme {}
