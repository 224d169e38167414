//! Who may do what: the `[[tokens]]` of a config as a table of [`Caller`]s, and the one rule
//! for personal data. The HTTP API and the admin UI both check callers against this table, so
//! a token means the same in either.

use std::collections::HashMap;

use eshost_store::{EventStore, RecordedEvent};

use crate::config::{Config, Role};

/// A configured token's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who (the token's name, else its role).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Whether it may see decrypted personal data.
    pub personal_data: bool,
}

/// The tokens of a config. Empty: the host is open (loopback only), and everyone may do
/// everything.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_token: HashMap<String, Caller>,
}

impl Tokens {
    /// The `[[tokens]]` of `config`.
    pub fn from_config(config: &Config) -> Tokens {
        let by_token = config
            .tokens
            .iter()
            .map(|t| {
                let caller = Caller {
                    name: t.name.clone().unwrap_or_else(|| t.role.as_str().to_owned()),
                    role: t.role,
                    personal_data: t.personal_data,
                };
                (t.token.clone(), caller)
            })
            .collect();
        Tokens { by_token }
    }

    /// Whether no token is configured (the open mode).
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }

    /// The holder of `token`, if it is configured.
    pub fn get(&self, token: &str) -> Option<&Caller> {
        self.by_token.get(token)
    }
}

/// Whether a reader may see decrypted personal data: a token must say so; without tokens
/// (open, loopback only) everyone may.
pub fn discloses(caller: Option<&Caller>) -> bool {
    caller.is_none_or(|caller| caller.personal_data)
}

/// Decrypts the personal data of `events` for a reader allowed to see it; for others, leaves
/// only whether it was shredded.
pub fn disclose(store: &dyn EventStore, events: &mut [RecordedEvent], allowed: bool) {
    for event in events.iter_mut().filter(|e| e.sealed.is_some()) {
        store.reveal_owned(event);
        if !allowed {
            event.personal_data = None;
        }
    }
}
