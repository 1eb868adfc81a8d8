//! The awareness states of one document (who is there, their cursors), with
//! the rules of y-protocols' `applyAwarenessUpdate`, so that the
//! y-websocket provider sees exactly what its own server would send.
//!
//! A state is taken if the client is unknown or has no state, if its clock
//! is newer, or if it is a removal (`null`) at the same clock. A client
//! removed is forgotten, so one that reconnects with the same clock is taken
//! again.

use std::collections::HashMap;
use std::sync::Arc;

use yrs::block::ClientID;
use yrs::sync::AwarenessUpdate;
use yrs::sync::awareness::AwarenessUpdateEntry;

/// What one update changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Clients that had no state and now have one.
    pub added: Vec<ClientID>,
    /// Clients whose state was renewed (changed or not).
    pub updated: Vec<ClientID>,
    /// Clients whose state was removed.
    pub removed: Vec<ClientID>,
}

impl Changes {
    /// Whether anything changed (then the update is sent on).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty()
    }

    /// Every client concerned.
    pub fn all(&self) -> impl Iterator<Item = ClientID> + '_ {
        self.added
            .iter()
            .chain(&self.updated)
            .chain(&self.removed)
            .copied()
    }
}

/// The awareness states of one document.
#[derive(Debug, Default)]
pub struct States {
    states: HashMap<ClientID, (u32, Arc<str>)>,
}

const NULL: &str = "null";

impl States {
    /// Applies an update and says what changed.
    pub fn apply(&mut self, update: &AwarenessUpdate) -> Changes {
        let mut changes = Changes::default();
        for (&id, entry) in &update.clients {
            let removal = &*entry.json == NULL;
            let current = self.states.get(&id);
            let take = match current {
                None => true,
                Some((clock, _)) => *clock < entry.clock || (*clock == entry.clock && removal),
            };
            if !take {
                continue;
            }
            match (current.is_some(), removal) {
                (false, false) => changes.added.push(id),
                (true, true) => changes.removed.push(id),
                (true, false) => changes.updated.push(id),
                (false, true) => {}
            }
            if removal {
                self.states.remove(&id);
            } else {
                self.states.insert(id, (entry.clock, entry.json.clone()));
            }
        }
        changes
    }

    /// The update that tells a peer about `clients`: their states, or
    /// `null` at `removed_clock` for those without one.
    pub fn encode(
        &self,
        clients: impl IntoIterator<Item = ClientID>,
        removed: &HashMap<ClientID, u32>,
    ) -> AwarenessUpdate {
        let mut out = HashMap::new();
        for id in clients {
            let entry = match self.states.get(&id) {
                Some((clock, json)) => AwarenessUpdateEntry {
                    clock: *clock,
                    json: json.clone(),
                },
                None => AwarenessUpdateEntry {
                    clock: removed.get(&id).copied().unwrap_or(0),
                    json: NULL.into(),
                },
            };
            out.insert(id, entry);
        }
        AwarenessUpdate { clients: out }
    }

    /// Every state, as one update (empty if there are none).
    pub fn all(&self) -> AwarenessUpdate {
        self.encode(
            self.states.keys().copied().collect::<Vec<_>>(),
            &HashMap::new(),
        )
    }

    /// Removes these clients' states; returns the update that tells the
    /// others (`null` at the same clock), or `None` if none had a state.
    pub fn remove(
        &mut self,
        clients: impl IntoIterator<Item = ClientID>,
    ) -> Option<AwarenessUpdate> {
        let mut out = HashMap::new();
        for id in clients {
            if let Some((clock, _)) = self.states.remove(&id) {
                out.insert(
                    id,
                    AwarenessUpdateEntry {
                        clock,
                        json: NULL.into(),
                    },
                );
            }
        }
        (!out.is_empty()).then_some(AwarenessUpdate { clients: out })
    }

    /// How many clients have a state.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether no client has a state.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(entries: &[(u64, u32, &str)]) -> AwarenessUpdate {
        AwarenessUpdate {
            clients: entries
                .iter()
                .map(|&(id, clock, json)| {
                    (
                        ClientID::new(id),
                        AwarenessUpdateEntry {
                            clock,
                            json: json.into(),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn the_rules_of_y_protocols() {
        let mut s = States::default();
        let c = ClientID::new(1);
        assert_eq!(s.apply(&update(&[(1, 0, "{\"a\":1}")])).added, [c]);
        // An echo at the same clock changes nothing (and is not sent on).
        assert!(s.apply(&update(&[(1, 0, "{\"a\":1}")])).is_empty());
        assert!(
            s.apply(&update(&[(1, 0, "{\"a\":2}")])).is_empty(),
            "same clock"
        );
        assert_eq!(s.apply(&update(&[(1, 1, "{\"a\":2}")])).updated, [c]);
        assert!(
            s.apply(&update(&[(1, 0, "null")])).is_empty(),
            "older clock"
        );
        assert_eq!(s.apply(&update(&[(1, 1, "null")])).removed, [c]);
        assert!(s.is_empty());
        // Back with the same clock after a removal: taken.
        assert_eq!(s.apply(&update(&[(1, 1, "{\"a\":2}")])).added, [c]);
        let gone = s.remove([c, ClientID::new(9)]).unwrap();
        assert_eq!(&*gone.clients[&c].json, "null");
        assert_eq!(gone.clients[&c].clock, 1);
        assert_eq!(gone.clients.len(), 1);
        assert!(s.remove([c]).is_none());
    }
}
