//! Supervision for demandflow: stages that restart when they fail.
//!
//! A [`Supervisor`] starts stages from factories, watches them, and restarts
//! them with OTP's strategies (one for one, rest for one, one for all) and
//! restart intensity. Most users reach it through the `demandflow` facade.

mod stage_supervisor;

pub use stage_supervisor::{
    Children, Restart, StartChildError, Strategy, Supervisor, SupervisorBuilder,
};
