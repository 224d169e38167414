//! Sleeping until a runner (a projection's or a reactor's) has work: a control message, a new
//! head of the log, or a deadline (a retry, a sync, a timer).

use std::time::Instant;

use tokio::sync::{mpsc, watch};

/// What woke a runner.
pub(crate) enum Woken<C> {
    /// A caller asked something.
    Control(C),
    /// Every sender of control messages is gone: the host was dropped.
    Orphaned,
    /// The head moved, or the deadline passed.
    Work,
}

/// Blocks on `waiter` until a control message, a change of `head`, or `deadline`.
/// `head_open` turns false once the store stops sending on `head` (then only the other two
/// wake the runner).
pub(crate) fn sleep<C>(
    waiter: &tokio::runtime::Runtime,
    control: &mut mpsc::UnboundedReceiver<C>,
    head: &mut watch::Receiver<u64>,
    head_open: &mut bool,
    deadline: Option<Instant>,
) -> Woken<C> {
    waiter.block_on(async {
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let head_changed = async {
            if !*head_open || head.changed().await.is_err() {
                *head_open = false;
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            control = control.recv() => match control {
                Some(control) => Woken::Control(control),
                None => Woken::Orphaned,
            },
            () = head_changed => Woken::Work,
            () = sleep => Woken::Work,
        }
    })
}
