//! What a read asks for: which events of a stream or of `$all`, in which direction, up to
//! which bound. Every backend answers the same requests.

/// Which way a read walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

/// An upper bound on what a read returns, for "as of" queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Until {
    /// Only events at or before this position.
    Position(u64),
    /// Only events recorded at or before this time (ms since the epoch).
    Time(u64),
}

/// A read of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRead {
    /// First version to return (inclusive). Backward reads start here and go down;
    /// `u64::MAX` means the end of the stream.
    pub from_version: u64,
    /// Which way to walk.
    pub direction: Direction,
    /// The most events to return.
    pub limit: usize,
    /// Leave out events after this bound.
    pub until: Option<Until>,
}

impl StreamRead {
    /// The whole stream, oldest first.
    pub fn forward() -> Self {
        StreamRead {
            from_version: 1,
            direction: Direction::Forward,
            limit: usize::MAX,
            until: None,
        }
    }

    /// The whole stream, newest first.
    pub fn backward() -> Self {
        StreamRead {
            from_version: u64::MAX,
            direction: Direction::Backward,
            limit: usize::MAX,
            until: None,
        }
    }
}

/// A read of `$all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllRead {
    /// First position to return (inclusive). Backward reads start here and go down;
    /// `u64::MAX` means the head.
    pub from_position: u64,
    /// Which way to walk.
    pub direction: Direction,
    /// The most events to return.
    pub limit: usize,
    /// Only events of these types (all types when empty).
    pub event_types: Vec<String>,
    /// Leave out events after this bound.
    pub until: Option<Until>,
}

impl AllRead {
    /// Everything from `position` on, oldest first.
    pub fn from(position: u64) -> Self {
        AllRead {
            from_position: position,
            direction: Direction::Forward,
            limit: usize::MAX,
            event_types: Vec::new(),
            until: None,
        }
    }
}
