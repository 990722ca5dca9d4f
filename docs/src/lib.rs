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
//! (`cargo test --workspace` runs them too). Read the guide as a book with
//! `mdbook build docs/guide --open`, or here with
//! `cargo doc -p demandflow-docs --open`, where hidden setup lines are hidden.
//!
//! To add a chapter, write `docs/guide/NN-name.md`, list it in
//! `docs/guide/SUMMARY.md`, include it below and link it from the facade's
//! "The guide" section (`src/lib.rs`); `tests/book.rs` checks all four and
//! every link between chapters.

#[doc = include_str!("../guide/introduction.md")]
pub mod introduction {}

#[doc = include_str!("../guide/01-first-pipeline.md")]
pub mod first_pipeline {}

#[doc = include_str!("../guide/02-demand.md")]
pub mod demand {}

#[doc = include_str!("../guide/03-waiting-producers.md")]
pub mod waiting_producers {}

#[doc = include_str!("../guide/04-dispatchers.md")]
pub mod dispatchers {}

#[doc = include_str!("../guide/05-failure.md")]
pub mod failure {}

#[doc = include_str!("../guide/06-one-task-per-event.md")]
pub mod one_task_per_event {}

#[doc = include_str!("../guide/07-messages.md")]
pub mod messages {}

#[doc = include_str!("../guide/08-keyed-workers.md")]
pub mod keyed_workers {}

#[doc = include_str!("../guide/09-shutting-down.md")]
pub mod shutting_down {}

#[doc = include_str!("../guide/10-testing.md")]
pub mod testing {}

#[doc = include_str!("../guide/11-performance.md")]
pub mod performance {}

#[doc = include_str!("../guide/12-timeline.md")]
pub mod timeline {}

#[doc = include_str!("../guide/13-write-behind.md")]
pub mod write_behind {}

#[doc = include_str!("../guide/14-more-than-one-machine.md")]
pub mod more_than_one_machine {}

#[doc = include_str!("../guide/15-observing.md")]
pub mod observing {}

#[doc = include_str!("../guide/16-analytics.md")]
pub mod analytics {}

#[doc = include_str!("../guide/20-coming-from-genstage.md")]
pub mod coming_from_genstage {}

#[doc = include_str!("../../README.md")]
pub mod readme {}
