//! Given/when/then scenarios for any [`Aggregate`], for the tests of this
//! crate and of the crates built on it.
//!
//! A scenario folds the `given` events into a state, lets that state `decide`
//! the `when` command, and checks the decision: the exact events it produced,
//! or the rejection. Everything is pure; a failed expectation panics with the
//! history, the command and the actual decision, at the caller's line.
//!
//! ```
//! use domain::tenant::{Email, Role, Tenant, TenantCommand, TenantEvent};
//! use domain::testing::{stand_in_sealed, Scenario};
//! use domain::TenantId;
//!
//! let email = Email::parse("ada@example.com").unwrap();
//! let sealed_email = stand_in_sealed("ada@example.com");
//! let registered = TenantEvent::TenantRegistered {
//!     tenant_id: TenantId::for_email(email.as_str()),
//!     email: sealed_email.clone().into(),
//!     role: Role::User,
//! };
//!
//! Scenario::<Tenant>::given_no_events()
//!     .when(TenantCommand::Register { email: email.clone(), sealed_email: sealed_email.clone(), role: Role::User })
//!     .then_expect([registered.clone()]);
//!
//! Scenario::<Tenant>::given([registered])
//!     .when(TenantCommand::Register { email, sealed_email, role: Role::Admin })
//!     .then_error_code("already_exists");
//! ```

use crate::aggregate::{Aggregate, Decision};
use crate::sealed::Sealed;

/// A well-formed sealed value standing in for real ciphertext in pure
/// tests: the domain keeps sealed values without ever opening them, so
/// only their shape matters here. It hides nothing (the text is hex).
pub fn stand_in_sealed(text: &str) -> Sealed {
    let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
    let body = if hex.is_empty() { "00".to_owned() } else { hex };
    Sealed::from_text(format!("nsf1.0000000000000000.{body}")).expect("stand-in is well formed")
}
use crate::error::DomainError;
use crate::event::EventPayload;
use crate::SCHEMA_VERSION;

/// The `given` half of a scenario: the history of one stream.
#[derive(Debug, Clone)]
pub struct Scenario<A: Aggregate> {
    history: Vec<A::Event>,
}

impl<A: Aggregate> Scenario<A> {
    /// A stream that already holds `events`, oldest first.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        Scenario {
            history: events.into_iter().collect(),
        }
    }

    /// A stream that holds nothing yet.
    pub fn given_no_events() -> Self {
        Self::given([])
    }

    /// Replays the history and decides `command` on the resulting state.
    pub fn when(self, command: A::Command) -> Outcome<A> {
        let state = A::replay(&self.history);
        let decision = state.decide(&command);
        Outcome {
            history: self.history,
            state,
            command,
            decision,
        }
    }
}

/// The `then` half of a scenario: a decision waiting to be checked.
#[derive(Debug)]
pub struct Outcome<A: Aggregate> {
    history: Vec<A::Event>,
    state: A,
    command: A::Command,
    decision: Decision<A::Event>,
}

impl<A: Aggregate> Outcome<A> {
    /// Asserts that the command was accepted with exactly `expected`, and that
    /// each of those events survives the trip through its stored form.
    /// Returns the state after applying them, for further assertions.
    #[track_caller]
    pub fn then_expect(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        let events = match &self.decision {
            Ok(events) if *events == expected => events,
            _ => self.fail(&format!("expected events {expected:#?}")),
        };
        let mut state = self.state;
        for event in events {
            assert_round_trip(event);
            state.apply(event);
        }
        state
    }

    /// Asserts that the command was accepted as a no-op (an idempotent repeat).
    #[track_caller]
    pub fn then_expect_no_events(self) -> A {
        self.then_expect([])
    }

    /// Asserts that the command was rejected with an error that `predicate`
    /// accepts, typically `|error| matches!(error, DomainError::NotFound { .. })`.
    #[track_caller]
    pub fn then_reject(self, predicate: impl FnOnce(&DomainError) -> bool) -> DomainError {
        match &self.decision {
            Err(error) if predicate(error) => error.clone(),
            _ => self.fail("expected a rejection matching the predicate"),
        }
    }

    /// Asserts that the command was rejected with the stable error `code`
    /// (see [`DomainError::code`]).
    #[track_caller]
    pub fn then_error_code(self, code: &str) -> DomainError {
        match &self.decision {
            Err(error) if error.code() == code => error.clone(),
            _ => self.fail(&format!("expected a rejection with code {code:?}")),
        }
    }

    /// The raw decision, for checks the methods above do not cover.
    pub fn decision(&self) -> &Decision<A::Event> {
        &self.decision
    }

    #[track_caller]
    fn fail(&self, expectation: &str) -> ! {
        panic!(
            "{expectation}\n  given: {:#?}\n  when: {:#?}\n  got: {:#?}",
            self.history, self.command, self.decision
        )
    }
}

/// Encodes `event` as it is stored (its type name and its data, as JSON
/// text) and decodes it again under the current schema version.
pub fn round_trip<E: EventPayload>(event: &E) -> E {
    let stored = event.to_data().to_string();
    let data =
        serde_json::from_str(&stored).unwrap_or_else(|error| panic!("stored data {stored} is not json: {error}"));
    E::from_data(event.event_type(), SCHEMA_VERSION, data)
        .unwrap_or_else(|error| panic!("cannot decode {event:?} from {stored}: {error}"))
}

/// Asserts that `event` decodes from its stored form to an equal event.
#[track_caller]
pub fn assert_round_trip<E: EventPayload>(event: &E) {
    assert_eq!(&round_trip(event), event, "event changed in its stored form");
}
