//! The commands: `iotwatch run` (live, on a bridge) and `iotwatch replay` (capture files).

pub mod live;
pub mod replay;
pub mod run;
