use crate::error::DomainError;
use crate::event::EventPayload;

/// What a decision produces: the events to append, in order. An empty list
/// means the command was accepted but changes nothing (an idempotent repeat).
pub type Decision<E> = Result<Vec<E>, DomainError>;

/// An event-sourced aggregate. `decide` is pure and synchronous; `apply` must
/// accept every event that `decide` ever produced, and never fail, because
/// events are facts that already happened.
pub trait Aggregate: Default + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static {
    /// Stream category; the stream id is `<CATEGORY>-<uuid>`.
    const CATEGORY: &'static str;
    type Command: std::fmt::Debug + Send + Sync + 'static;
    type Event: EventPayload;

    fn decide(&self, command: &Self::Command) -> Decision<Self::Event>;
    fn apply(&mut self, event: &Self::Event);

    /// Folds a sequence of events into a state, starting from the empty one.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}
