//! Property tests: the events of any command sequence, replayed, rebuild the
//! same state.
//!
//! Each case decides a generated sequence of commands on a live state. It
//! applies the events of every accepted command and keeps them; a rejected
//! command leaves the state as it was. At the end, replaying the kept events
//! from the empty state must give the live state, both as decided and after a
//! trip through their stored form (`to_data` → JSON text → `from_data`). Every
//! live state must also keep its aggregate's invariants, and every transition
//! must respect the aggregate's rules.
//!
//! The generators draw from small pools (two tenants, three workers, a few
//! key ids, names and minutes) so that duplicates, wrong workers, expired
//! leases, limits and commands to deleted aggregates actually happen. A tally
//! of outcomes, summed over the whole run, then checks that every kind of
//! acceptance and rejection was reached. Without it, a generator that drifts
//! into sequences that are only ever rejected would pass without testing
//! anything.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Debug;

use chrono::{DateTime, Duration, Utc};
use domain::document::{
    staging_key, ArtifactRef, Backoff, Document, DocumentCommand, DocumentEvent, DocumentStatus, FileName,
    ProcessingStage,
};
use domain::knowledge_base::{KnowledgeBase, KnowledgeBaseCommand, KnowledgeBaseEvent};
use domain::tenant::{ApiKeyScopes, Email, Role, Tenant, TenantCommand, TenantEvent, MAX_ACTIVE_API_KEYS};
use domain::testing::{round_trip, stand_in_sealed};
use domain::{ChunkingSettings, EmbeddingModel, Protected};

/// The text a [`stand_in_sealed`] value encodes, to check that state keeps
/// the sealed form of the very name its id was derived from.
fn stand_in_plaintext(value: &Protected) -> String {
    let body = value.as_str().rsplit('.').next().expect("sealed shape");
    let bytes: Vec<u8> = (0..body.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&body[i..i + 2], 16).expect("hex stand-in"))
        .collect();
    String::from_utf8(bytes).expect("utf-8 stand-in")
}
use domain::{Aggregate, ApiKeyId, Decision, DocumentId, EventPayload, KnowledgeBaseId, TenantId};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseResult, TestRunner};
use uuid::Uuid;

/// Below this many cases a run is too short to be expected to reach every
/// outcome, so the coverage check is skipped (e.g. with `PROPTEST_CASES=8`).
const MIN_CASES_FOR_COVERAGE: u32 = 128;

const WORKERS: [&str; 3] = ["worker-a", "worker-b", "worker-c"];
const EMAILS: [&str; 2] = ["ada@example.com", "bob@example.com"];

/// A fixed instant plus `minutes`; the domain reads no clock.
fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).expect("valid timestamp") + Duration::minutes(minutes)
}

fn tenant_id(n: usize) -> TenantId {
    TenantId::for_email(EMAILS[n])
}

/// The outcomes a property run reached, summed over all of its cases.
#[derive(Default)]
struct Coverage {
    tally: RefCell<BTreeMap<String, usize>>,
}

impl Coverage {
    fn record(&self, outcome: impl Into<String>) {
        *self.tally.borrow_mut().entry(outcome.into()).or_default() += 1;
    }

    #[track_caller]
    fn assert_reached(&self, expected: &[&str]) {
        let tally = self.tally.borrow();
        let missing: Vec<&&str> = expected
            .iter()
            .filter(|outcome| !tally.contains_key(**outcome))
            .collect();
        assert!(
            missing.is_empty(),
            "the generated sequences never reached {missing:?}; outcomes reached: {tally:#?}"
        );
    }
}

/// The variant name of a command, from its `Debug` form.
fn command_name(command: &impl Debug) -> String {
    format!("{command:?}")
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

/// Runs `property` on the values of `strategy` (256 cases unless
/// `PROPTEST_CASES` says otherwise), then checks that the run reached every
/// `expected` outcome.
fn check<S: Strategy>(strategy: S, expected: &[&str], property: impl Fn(S::Value, &Coverage) -> TestCaseResult)
where
    S::Value: Debug,
{
    let coverage = Coverage::default();
    // a failing case is saved beside this file (replay.proptest-regressions)
    // and tried first on later runs; integration tests have no lib.rs above
    // them for proptest's default location
    let config = Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::with_source_file(file!())
    };
    let mut runner = TestRunner::new(config);
    if let Err(failure) = runner.run(&strategy, |value| property(value, &coverage)) {
        panic!("{failure}");
    }
    if runner.config().cases >= MIN_CASES_FOR_COVERAGE {
        coverage.assert_reached(expected);
    }
}

/// Decides `commands` in order on a live state: the events of an accepted
/// command are applied and kept, a rejected one changes nothing. After every
/// command, `check_step(before, command, decision, after)` checks the
/// transition and the invariants of the new state. At the end, the kept
/// events, replayed from the empty state as decided and as decoded from their
/// stored form, must rebuild the live state.
fn run_and_replay<A: Aggregate>(
    commands: &[A::Command],
    coverage: &Coverage,
    check_step: impl Fn(&A, &A::Command, &Decision<A::Event>, &A) -> TestCaseResult,
) -> TestCaseResult {
    let mut live = A::default();
    let mut kept: Vec<A::Event> = Vec::new();
    for command in commands {
        let before = live.clone();
        let decision = live.decide(command);
        prop_assert_eq!(
            &live.decide(command),
            &decision,
            "decide is not deterministic for {:?}",
            command
        );
        let name = command_name(command);
        match &decision {
            Ok(events) if events.is_empty() => coverage.record(format!("{name} accepted as a no-op")),
            Ok(events) => {
                for event in events {
                    coverage.record(format!("{name} accepted {}", event.event_type()));
                    live.apply(event);
                }
                kept.extend(events.iter().cloned());
            }
            Err(error) => coverage.record(format!("{name} rejected {}", error.code())),
        }
        if decision.is_err() {
            prop_assert_eq!(&live, &before, "a rejected {:?} changed the state", command);
        }
        check_step(&before, command, &decision, &live)?;
    }

    prop_assert_eq!(
        &A::replay(&kept),
        &live,
        "replaying the kept events {:#?} does not rebuild the live state",
        kept
    );
    let stored: Vec<A::Event> = kept.iter().map(round_trip).collect();
    prop_assert_eq!(&stored, &kept, "events changed in their stored form");
    prop_assert_eq!(
        &A::replay(&stored),
        &live,
        "replaying the stored events does not rebuild the live state"
    );
    Ok(())
}

fn events_of<E>(decision: &Decision<E>) -> &[E] {
    decision.as_deref().unwrap_or_default()
}

mod tenant {
    use super::*;

    /// An api key id named by a step: a new one, or one named earlier in the
    /// sequence (issued, rejected or only ever revoked), which makes
    /// duplicates and revokes of real keys common.
    #[derive(Debug, Clone)]
    enum KeyPick {
        New,
        Earlier(Index),
    }

    #[derive(Debug, Clone)]
    enum Step {
        Register {
            email: usize,
            role: Role,
        },
        Issue {
            key: KeyPick,
            label: Option<String>,
            expires_at: Option<i64>,
            scopes: ApiKeyScopes,
        },
        /// `count` keys with new ids and valid labels in a row, as a script
        /// would issue them: reaches the active key limit in short sequences.
        IssueMany {
            count: usize,
        },
        Revoke {
            key: KeyPick,
        },
        Erase,
    }

    fn key_pick(new_weight: u32, earlier_weight: u32) -> impl Strategy<Value = KeyPick> {
        prop_oneof![
            new_weight => Just(KeyPick::New),
            earlier_weight => any::<Index>().prop_map(KeyPick::Earlier),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        let label = prop_oneof![
            3 => Just(None),
            3 => Just(Some("laptop".to_owned())),
            1 => Just(Some("é".repeat(100))),
            1 => Just(Some("x".repeat(101))),
            1 => Just(Some("bell\u{7}".to_owned())),
        ];
        // a few knowledge bases, so that a duplicate in a scope happens
        let knowledge_bases = vec((1u128..=3).prop_map(|n| KnowledgeBaseId(Uuid::from_u128(n))), 0..=3);
        let scopes = (any::<bool>(), proptest::option::weighted(0.3, knowledge_bases)).prop_map(
            |(read_only, knowledge_base_ids)| ApiKeyScopes {
                read_only,
                knowledge_base_ids,
            },
        );
        prop_oneof![
            1 => (0..EMAILS.len(), prop_oneof![Just(Role::User), Just(Role::Admin)])
                .prop_map(|(email, role)| Step::Register { email, role }),
            6 => (key_pick(5, 1), label, proptest::option::of(0i64..120), scopes)
                .prop_map(|(key, label, expires_at, scopes)| Step::Issue { key, label, expires_at, scopes }),
            1 => (5usize..=25).prop_map(|count| Step::IssueMany { count }),
            3 => key_pick(1, 6).prop_map(|key| Step::Revoke { key }),
            1 => Just(Step::Erase),
        ]
    }

    /// The commands of a plan; which key an `Earlier` pick names depends on
    /// the plan alone, not on what the tenant accepted.
    fn commands(steps: &[Step]) -> Vec<TenantCommand> {
        let mut named: Vec<ApiKeyId> = Vec::new();
        let mut name_key = |pick: &KeyPick| match pick {
            KeyPick::Earlier(index) if !named.is_empty() => named[index.index(named.len())].clone(),
            _ => {
                let key_id = ApiKeyId(format!("key-{}", named.len()));
                named.push(key_id.clone());
                key_id
            }
        };
        let mut commands = Vec::new();
        for step in steps {
            match step {
                Step::Register { email, role } => commands.push(TenantCommand::Register {
                    email: Email::parse(EMAILS[*email]).expect("valid email"),
                    sealed_email: stand_in_sealed(EMAILS[*email]),
                    role: *role,
                }),
                Step::Erase => commands.push(TenantCommand::Erase {
                    erasure_id: uuid::Uuid::from_u128(commands.len() as u128),
                }),
                Step::Issue {
                    key,
                    label,
                    expires_at,
                    scopes,
                } => {
                    let key_id = name_key(key);
                    commands.push(TenantCommand::IssueApiKey {
                        secret_hash: format!("hash-of-{key_id}"),
                        key_id,
                        label: label.clone(),
                        expires_at: expires_at.map(at),
                        scopes: scopes.clone(),
                    });
                }
                Step::IssueMany { count } => {
                    for _ in 0..*count {
                        let key_id = name_key(&KeyPick::New);
                        commands.push(TenantCommand::IssueApiKey {
                            secret_hash: format!("hash-of-{key_id}"),
                            key_id,
                            label: Some("provisioning script".to_owned()),
                            expires_at: None,
                            scopes: ApiKeyScopes::default(),
                        });
                    }
                }
                Step::Revoke { key } => commands.push(TenantCommand::RevokeApiKey { key_id: name_key(key) }),
            }
        }
        commands
    }

    fn check_step(
        before: &Tenant,
        command: &TenantCommand,
        decision: &Decision<TenantEvent>,
        after: &Tenant,
    ) -> TestCaseResult {
        let active = after.api_keys.values().filter(|key| !key.revoked).count();
        prop_assert!(active <= MAX_ACTIVE_API_KEYS, "{} active api keys", active);
        if after.erased.is_some() {
            prop_assert!(
                after.email.is_none() && after.api_keys.is_empty(),
                "an erased tenant keeps its email or keys"
            );
            prop_assert!(
                before.erased.is_none() || events_of(decision).is_empty(),
                "an erased tenant changed"
            );
            return Ok(());
        }
        match (after.id, &after.email, after.role) {
            (None, None, None) => prop_assert!(after.api_keys.is_empty(), "an unregistered tenant holds keys"),
            (Some(id), Some(email), Some(_)) => {
                prop_assert_eq!(id, TenantId::for_email(&stand_in_plaintext(email)))
            }
            _ => prop_assert!(false, "a half-registered tenant: {:?}", after),
        }
        if before.id.is_some() {
            prop_assert_eq!(
                (before.id, &before.email, before.role),
                (after.id, &after.email, after.role),
                "a registered tenant changed identity"
            );
        }
        // keys are never forgotten and never come back from revocation
        for (key_id, key) in &before.api_keys {
            let kept = after.api_keys.get(key_id);
            prop_assert!(
                kept.is_some_and(|kept| kept.expires_at == key.expires_at && (kept.revoked || !key.revoked)),
                "api key {} went from {:?} to {:?}",
                key_id,
                key,
                kept
            );
        }
        for event in events_of(decision) {
            if let TenantEvent::ApiKeyIssued { role, scopes, .. } = event {
                prop_assert_eq!(
                    Some(*role),
                    before.role,
                    "an issued key does not carry the tenant's role"
                );
                if let TenantCommand::IssueApiKey { scopes: asked_for, .. } = command {
                    prop_assert_eq!(scopes, asked_for, "an issued key does not carry the scopes asked for");
                }
                if let Some(ids) = &scopes.knowledge_base_ids {
                    let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
                    prop_assert!(
                        !ids.is_empty() && distinct.len() == ids.len(),
                        "a key was limited to {:?}",
                        ids
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn replaying_the_events_of_any_command_sequence_rebuilds_the_tenant() {
        check(
            vec(step(), 0..=60),
            &[
                "Register accepted TenantRegistered",
                "Register rejected already_exists",
                "IssueApiKey accepted ApiKeyIssued",
                "IssueApiKey rejected not_found",
                "IssueApiKey rejected already_exists",
                "IssueApiKey rejected conflict",
                "IssueApiKey rejected invalid_input",
                "RevokeApiKey accepted ApiKeyRevoked",
                "RevokeApiKey accepted as a no-op",
                "RevokeApiKey rejected not_found",
            ],
            |steps, coverage| run_and_replay::<Tenant>(&commands(&steps), coverage, check_step),
        );
    }
}

mod document {
    use super::*;

    /// A case is one document stream: its owner and file name are fixed, and
    /// so is the workers' `max_attempts` setting.
    #[derive(Debug, Clone)]
    struct Plan {
        max_attempts: u32,
        steps: Vec<Step>,
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// `matching_id: false` names the same file under another tenant.
        Register {
            matching_id: bool,
            size_bytes: u64,
        },
        /// The clock moves `after_minutes` forward before the worker asks.
        Start {
            worker: usize,
            after_minutes: i64,
            lease_minutes: i64,
        },
        Complete {
            worker: usize,
        },
        Fail {
            worker: usize,
            reason: &'static str,
        },
        /// The clock moves `after_minutes` forward before the worker reports
        /// a failure that may pass.
        ScheduleRetry {
            worker: usize,
            after_minutes: i64,
        },
        Retry,
        /// The worker reports its text cut into chunks.
        Stage {
            worker: usize,
        },
        Delete,
        /// A presigned upload, `expires_in_minutes` from now (0: refused).
        RequestUpload {
            matching_id: bool,
            size_bytes: u64,
            declare_sha256: bool,
            expires_in_minutes: i64,
        },
        /// Completes the latest requested upload (or an older one), with
        /// its bytes as declared or not.
        CompleteUpload {
            upload: UploadPick,
            after_minutes: i64,
            size_matches: bool,
            sha256_matches: bool,
        },
        RejectUpload {
            upload: UploadPick,
            reason: &'static str,
        },
        ExpireUpload {
            upload: UploadPick,
            after_minutes: i64,
        },
    }

    /// Which upload a step names: the one requested last, or one before it
    /// (the first of the sequence), which is seldom still pending.
    #[derive(Debug, Clone, Copy)]
    enum UploadPick {
        Latest,
        First,
    }

    const FILE: &str = "report.pdf";

    fn document_id() -> DocumentId {
        DocumentId::for_file(tenant_id(0), FILE)
    }

    fn step() -> impl Strategy<Value = Step> {
        let worker = 0..WORKERS.len();
        prop_oneof![
            // few sizes, so that the same bytes come again (already_exists)
            // as often as other bytes under the name (a new version)
            2 => (prop::bool::weighted(0.9), prop::sample::select(vec![1u64, 2, 3]))
                .prop_map(|(matching_id, size_bytes)| Step::Register { matching_id, size_bytes }),
            5 => (worker.clone(), prop::sample::select(vec![0i64, 1, 4, 9, 30]), prop::sample::select(vec![5i64, 10]))
                .prop_map(|(worker, after_minutes, lease_minutes)| Step::Start { worker, after_minutes, lease_minutes }),
            2 => worker.clone().prop_map(|worker| Step::Complete { worker }),
            2 => (worker.clone(), prop::sample::select(vec!["parser crashed", "  out of memory  ", "   "]))
                .prop_map(|(worker, reason)| Step::Fail { worker, reason }),
            1 => Just(Step::Delete),
            2 => (worker.clone(), prop::sample::select(vec![0i64, 1]))
                .prop_map(|(worker, after_minutes)| Step::ScheduleRetry { worker, after_minutes }),
            1 => Just(Step::Retry),
            1 => worker.clone().prop_map(|worker| Step::Stage { worker }),
            2 => (prop::bool::weighted(0.9), 0u64..10_000, any::<bool>(), prop::sample::select(vec![0i64, 5, 30]))
                .prop_map(|(matching_id, size_bytes, declare_sha256, expires_in_minutes)| Step::RequestUpload {
                    matching_id,
                    size_bytes,
                    declare_sha256,
                    expires_in_minutes,
                }),
            2 => (upload_pick(), prop::sample::select(vec![0i64, 1, 10]), prop::bool::weighted(0.8), prop::bool::weighted(0.8))
                .prop_map(|(upload, after_minutes, size_matches, sha256_matches)| Step::CompleteUpload {
                    upload,
                    after_minutes,
                    size_matches,
                    sha256_matches,
                }),
            1 => (upload_pick(), prop::sample::select(vec!["size differs", "   "]))
                .prop_map(|(upload, reason)| Step::RejectUpload { upload, reason }),
            1 => (upload_pick(), prop::sample::select(vec![0i64, 10, 40]))
                .prop_map(|(upload, after_minutes)| Step::ExpireUpload { upload, after_minutes }),
        ]
    }

    fn upload_pick() -> impl Strategy<Value = UploadPick> {
        prop_oneof![4 => Just(UploadPick::Latest), 1 => Just(UploadPick::First)]
    }

    /// What the sequence last declared for an upload: its id, size and
    /// checksum.
    #[derive(Clone)]
    struct Declared {
        upload_id: Uuid,
        size_bytes: u64,
        sha256: Option<String>,
    }

    fn plan() -> impl Strategy<Value = Plan> {
        // A quarter of the plans begin with a document whose first attempt
        // waits for its retry: random steps reach that state rarely (four
        // steps in order, by one worker, under a high enough attempt
        // limit), and what follows it (a start too early, a retry on
        // request, a delete) deserves as many cases as the rest.
        let waiting_for_retry = [
            Step::Register {
                matching_id: true,
                size_bytes: 1,
            },
            Step::Start {
                worker: 0,
                after_minutes: 0,
                lease_minutes: 10,
            },
            Step::ScheduleRetry {
                worker: 0,
                after_minutes: 0,
            },
        ];
        (1u32..=3, prop::bool::weighted(0.25), vec(step(), 0..=40)).prop_map(move |(max_attempts, begun, steps)| {
            let prefix = if begun { &waiting_for_retry[..] } else { &[] };
            Plan {
                max_attempts,
                steps: prefix.iter().cloned().chain(steps).collect(),
            }
        })
    }

    fn commands(plan: &Plan) -> Vec<DocumentCommand> {
        let file_name = FileName::parse(FILE).expect("valid file name");
        let mut clock = 0;
        let mut commands = Vec::new();
        let mut requested: Vec<Declared> = Vec::new();
        // an upload never requested, for the steps that come before any
        let unrequested = Declared {
            upload_id: Uuid::from_u128(u128::MAX),
            size_bytes: 1,
            sha256: None,
        };
        for step in &plan.steps {
            let pick = |upload: &UploadPick| match upload {
                UploadPick::Latest => requested.last().cloned().unwrap_or(unrequested.clone()),
                UploadPick::First => requested.first().cloned().unwrap_or(unrequested.clone()),
            };
            commands.push(match step {
                Step::Register {
                    matching_id,
                    size_bytes,
                } => DocumentCommand::Register {
                    document_id: if *matching_id {
                        document_id()
                    } else {
                        DocumentId::for_file(tenant_id(1), FILE)
                    },
                    tenant_id: tenant_id(0),
                    file_name: file_name.clone(),
                    sealed_file_name: stand_in_sealed(FILE),
                    content_type: "application/pdf".into(),
                    size_bytes: *size_bytes,
                    sha256: format!("{size_bytes:064x}"),
                    object_key: format!("uploads/{}", document_id()),
                    knowledge_base_id: None,
                },
                Step::Start {
                    worker,
                    after_minutes,
                    lease_minutes,
                } => {
                    clock += after_minutes;
                    DocumentCommand::StartProcessing {
                        worker: WORKERS[*worker].into(),
                        now: at(clock),
                        lease_for: Duration::minutes(*lease_minutes),
                        max_attempts: plan.max_attempts,
                    }
                }
                Step::Complete { worker } => DocumentCommand::CompleteProcessing {
                    worker: WORKERS[*worker].into(),
                    artifact: ArtifactRef {
                        object_key: format!("artifacts/{}/{}", document_id(), WORKERS[*worker]),
                        sha256: "ab".repeat(32),
                        chunk_count: 3,
                        embedder: "minilm".into(),
                        dimensions: 384,
                        embedder_version: Some("sha256:ab".into()),
                    },
                },
                Step::Fail { worker, reason } => DocumentCommand::FailProcessing {
                    worker: WORKERS[*worker].into(),
                    reason: (*reason).into(),
                },
                Step::ScheduleRetry { worker, after_minutes } => {
                    clock += after_minutes;
                    DocumentCommand::ScheduleRetry {
                        worker: WORKERS[*worker].into(),
                        reason: "store unreachable".into(),
                        now: at(clock),
                        max_attempts: plan.max_attempts,
                        // long beside the steps' clock, so that a start is
                        // often too early
                        backoff: Backoff {
                            base: Duration::minutes(5),
                            max: Duration::minutes(40),
                        },
                    }
                }
                Step::Retry => DocumentCommand::Retry,
                Step::Stage { worker } => DocumentCommand::RecordStage {
                    worker: WORKERS[*worker].into(),
                    stage: ProcessingStage::Chunked {
                        chunk_count: 7,
                        settings: Some(ChunkingSettings {
                            max_tokens: 200,
                            overlap_tokens: 32,
                        }),
                        tokenizer: Some("words-v1".into()),
                    },
                },
                Step::Delete => DocumentCommand::Delete,
                Step::RequestUpload {
                    matching_id,
                    size_bytes,
                    declare_sha256,
                    expires_in_minutes,
                } => {
                    let declared = Declared {
                        // fresh per request, as the API draws them
                        upload_id: Uuid::from_u128(requested.len() as u128 + 1),
                        size_bytes: *size_bytes,
                        sha256: declare_sha256.then(|| format!("{size_bytes:064x}")),
                    };
                    requested.push(declared.clone());
                    DocumentCommand::RequestUpload {
                        document_id: if *matching_id {
                            document_id()
                        } else {
                            DocumentId::for_file(tenant_id(1), FILE)
                        },
                        tenant_id: tenant_id(0),
                        file_name: file_name.clone(),
                        sealed_file_name: stand_in_sealed(FILE),
                        content_type: "application/pdf".into(),
                        size_bytes: declared.size_bytes,
                        sha256: declared.sha256,
                        knowledge_base_id: None,
                        upload_id: declared.upload_id,
                        now: at(clock),
                        expires_at: at(clock + expires_in_minutes),
                    }
                }
                Step::CompleteUpload {
                    upload,
                    after_minutes,
                    size_matches,
                    sha256_matches,
                } => {
                    clock += after_minutes;
                    let declared = pick(upload);
                    let size_bytes = declared.size_bytes + u64::from(!size_matches);
                    let sha256 = match (&declared.sha256, sha256_matches) {
                        (Some(sha256), true) => sha256.clone(),
                        _ => "ff".repeat(32),
                    };
                    DocumentCommand::CompleteUpload {
                        upload_id: declared.upload_id,
                        size_bytes,
                        sha256,
                        object_key: format!("tenants/{}/documents/{}/{}", tenant_id(0), document_id(), clock),
                        now: at(clock),
                    }
                }
                Step::RejectUpload { upload, reason } => DocumentCommand::RejectUpload {
                    upload_id: pick(upload).upload_id,
                    reason: (*reason).into(),
                },
                Step::ExpireUpload { upload, after_minutes } => {
                    clock += after_minutes;
                    DocumentCommand::ExpireUpload {
                        upload_id: pick(upload).upload_id,
                        now: at(clock),
                    }
                }
            });
        }
        commands
    }

    fn check_step(
        max_attempts: u32,
        coverage: &Coverage,
        before: &Document,
        command: &DocumentCommand,
        decision: &Decision<DocumentEvent>,
        after: &Document,
    ) -> TestCaseResult {
        // a completed upload is a registration too
        let registers = matches!(
            command,
            DocumentCommand::Register { .. } | DocumentCommand::CompleteUpload { .. }
        );
        let handles_an_upload = matches!(
            command,
            DocumentCommand::RequestUpload { .. }
                | DocumentCommand::RejectUpload { .. }
                | DocumentCommand::ExpireUpload { .. }
        );
        if before.deleted && !registers && !handles_an_upload {
            coverage.record("a command to a deleted document");
            prop_assert!(
                decision.as_ref().is_err_and(|error| error.code() == "not_found"),
                "a deleted document accepted {:?}: {:?}",
                command,
                decision
            );
        }

        prop_assert!(
            after.attempts <= max_attempts,
            "{} attempts with max_attempts {}",
            after.attempts,
            max_attempts
        );
        if let Some(pending) = &after.pending_upload {
            prop_assert!(
                after.id.is_none() || after.deleted,
                "a live document with an open upload: {:?}",
                after
            );
            prop_assert_eq!(
                pending.document_id,
                DocumentId::for_file(pending.tenant_id, &stand_in_plaintext(&pending.file_name))
            );
            prop_assert_eq!(
                &pending.staging_key,
                &staging_key(pending.tenant_id, pending.document_id, pending.upload_id)
            );
        }
        if let (DocumentCommand::CompleteUpload { size_bytes, .. }, Ok(events)) = (command, decision) {
            let pending = before.pending_upload.as_ref().expect("completed an open upload");
            prop_assert_eq!(*size_bytes, pending.size_bytes, "completed with another size");
            prop_assert!(
                matches!(&events[..], [DocumentEvent::DocumentRegistered { sha256, .. }]
                    if pending.sha256.as_ref().is_none_or(|declared| declared == sha256)),
                "completed with another checksum: {:?}",
                events
            );
        }
        let Some(id) = after.id else {
            let unregistered = Document {
                pending_upload: after.pending_upload.clone(),
                ..Document::default()
            };
            prop_assert_eq!(after, &unregistered, "an unregistered document holds state");
            return Ok(());
        };
        let (Some(tenant), Some(file_name), Some(status)) = (after.tenant_id, &after.file_name, after.status) else {
            return Err(TestCaseError::fail(format!("a half-registered document: {after:?}")));
        };
        prop_assert_eq!(id, DocumentId::for_file(tenant, &stand_in_plaintext(file_name)));
        prop_assert!(after.content_type.is_some() && after.object_key.is_some());
        if after.deleted {
            prop_assert!(after.lease.is_none(), "a deleted document holds a lease");
        } else {
            prop_assert_eq!(
                status == DocumentStatus::Processing,
                after.lease.is_some(),
                "status {:?} with lease {:?}",
                status,
                &after.lease
            );
        }
        match status {
            // pending afresh, or again after a failed attempt: then with its
            // reason and the time it is due
            DocumentStatus::Pending => prop_assert!(
                after.artifact.is_none()
                    && (after.attempts >= 1) == after.retry_at.is_some()
                    && after.error.is_some() == after.retry_at.is_some(),
                "a pending document with an unexplained history: {:?}",
                after
            ),
            DocumentStatus::Processing => {
                prop_assert!(after.attempts >= 1, "processing without an attempt")
            }
            DocumentStatus::Success => {
                prop_assert!(after.artifact.is_some(), "a success without an artifact")
            }
            DocumentStatus::Failed => {
                prop_assert!(after.error.is_some(), "a failure without a reason")
            }
        }

        // short of a new registration or a retry on request: attempts only
        // count up, one at a time, and a processed or failed document stays so
        if let Ok([DocumentEvent::DocumentVersionAdded { version, .. }]) = decision.as_deref() {
            prop_assert_eq!(*version, before.version + 1, "versions count up by one");
            prop_assert_eq!(after.version, *version);
            prop_assert_eq!(after.status, Some(DocumentStatus::Pending));
            prop_assert!(after.lease.is_none(), "a new version ends the lease on the old one");
        }
        let retried = matches!(decision, Ok(events) if events.contains(&DocumentEvent::RetryRequested {}));
        if retried {
            prop_assert_eq!(
                before.status,
                Some(DocumentStatus::Failed),
                "retried a document that had not failed"
            );
            prop_assert_eq!(after.attempts, 0);
        }
        if before.id.is_some() && !registers && !retried {
            prop_assert!(
                before.attempts <= after.attempts && after.attempts <= before.attempts + 1,
                "attempts went from {} to {}",
                before.attempts,
                after.attempts
            );
            if let Some(done @ (DocumentStatus::Success | DocumentStatus::Failed)) = before.status {
                prop_assert_eq!(after.status, Some(done), "a finished document changed status");
            }
        }
        for event in events_of(decision) {
            if let DocumentEvent::ProcessingFailed { attempt, .. } = event {
                prop_assert_eq!(*attempt, after.attempts, "a failure does not name the last attempt");
            }
        }
        Ok(())
    }

    #[test]
    fn replaying_the_events_of_any_command_sequence_rebuilds_the_document() {
        check(
            plan(),
            &[
                "Register accepted DocumentRegistered",
                "Register rejected already_exists",
                "Register accepted DocumentVersionAdded",
                "Register rejected invalid_input",
                "StartProcessing accepted ProcessingStarted",
                "StartProcessing accepted ProcessingFailed",
                "StartProcessing accepted as a no-op",
                "StartProcessing rejected lease_held",
                "StartProcessing rejected conflict",
                "StartProcessing rejected not_found",
                "CompleteProcessing accepted DocumentProcessed",
                "CompleteProcessing rejected not_lease_holder",
                "FailProcessing accepted ProcessingFailed",
                "FailProcessing rejected not_lease_holder",
                "FailProcessing rejected invalid_input",
                "Delete accepted DocumentDeleted",
                "Delete rejected not_found",
                "a command to a deleted document",
                "Register rejected upload_pending",
                "RequestUpload accepted UploadRequested",
                "RequestUpload rejected already_exists",
                "RequestUpload rejected upload_pending",
                "RequestUpload rejected invalid_input",
                "CompleteUpload accepted DocumentRegistered",
                "CompleteUpload rejected no_pending_upload",
                "CompleteUpload rejected upload_expired",
                "CompleteUpload rejected invalid_input",
                "RejectUpload accepted UploadRejected",
                "RejectUpload rejected no_pending_upload",
                "RejectUpload rejected invalid_input",
                "ExpireUpload accepted UploadExpired",
                "ExpireUpload accepted as a no-op",
                "ExpireUpload rejected conflict",
                "ScheduleRetry accepted RetryScheduled",
                "ScheduleRetry accepted ProcessingFailed",
                "ScheduleRetry rejected not_lease_holder",
                "StartProcessing rejected retry_not_due",
                "Retry accepted RetryRequested",
                "Retry rejected conflict",
                "RecordStage accepted TextChunked",
                "RecordStage rejected not_lease_holder",
            ],
            |plan, coverage| {
                run_and_replay::<Document>(&commands(&plan), coverage, |before, command, decision, after| {
                    check_step(plan.max_attempts, coverage, before, command, decision, after)
                })
            },
        );
    }
}

mod knowledge_base {
    use super::*;

    /// The documents a knowledge base may name, with their owners: two of
    /// tenant 0 and one of tenant 1.
    const DOCUMENTS: [(usize, &str); 3] = [(0, "a.pdf"), (0, "b.md"), (1, "a.pdf")];

    fn document(n: usize) -> (DocumentId, TenantId) {
        let (owner, file) = DOCUMENTS[n];
        (DocumentId::for_file(tenant_id(owner), file), tenant_id(owner))
    }

    fn owner_of(document_id: &DocumentId) -> Option<TenantId> {
        (0..DOCUMENTS.len())
            .map(document)
            .find(|(id, _)| id == document_id)
            .map(|(_, owner)| owner)
    }

    #[derive(Debug, Clone)]
    enum Step {
        Create {
            tenant: usize,
            name: String,
            category: Option<String>,
        },
        Add {
            document: usize,
        },
        Remove {
            document: usize,
        },
        Delete,
    }

    fn step() -> impl Strategy<Value = Step> {
        let name = prop_oneof![
            4 => Just("Papers".to_owned()),
            2 => Just("  Reading list  ".to_owned()),
            1 => Just("   ".to_owned()),
            1 => Just("x".repeat(201)),
        ];
        let category = prop_oneof![
            2 => Just(None),
            2 => Just(Some("ml".to_owned())),
            1 => Just(Some("tab\there".to_owned())),
        ];
        prop_oneof![
            3 => (0..EMAILS.len(), name, category)
                .prop_map(|(tenant, name, category)| Step::Create { tenant, name, category }),
            8 => (0..DOCUMENTS.len()).prop_map(|document| Step::Add { document }),
            4 => (0..DOCUMENTS.len()).prop_map(|document| Step::Remove { document }),
            1 => Just(Step::Delete),
        ]
    }

    fn model(name: &str) -> EmbeddingModel {
        EmbeddingModel {
            name: name.into(),
            dimensions: 384,
            version: "1".into(),
        }
    }

    fn commands(steps: &[Step]) -> Vec<KnowledgeBaseCommand> {
        let knowledge_base_id = KnowledgeBaseId(Uuid::from_u128(0x6b62));
        steps
            .iter()
            .map(|step| match step {
                Step::Create { tenant, name, category } => KnowledgeBaseCommand::Create {
                    knowledge_base_id,
                    tenant_id: tenant_id(*tenant),
                    name: name.clone(),
                    category: category.clone(),
                    sealed_name: stand_in_sealed(name),
                    sealed_category: category.as_deref().map(stand_in_sealed),
                    embedding_model: model("minilm"),
                    chunking: ChunkingSettings {
                        max_tokens: 200,
                        overlap_tokens: 32,
                    },
                },
                Step::Add { document: n } => {
                    let (document_id, document_tenant) = document(*n);
                    // some documents were embedded by another model, which
                    // the knowledge base refuses
                    KnowledgeBaseCommand::AddDocument {
                        document_id,
                        document_tenant,
                        document_model: match n % 3 {
                            0 => None,
                            1 => Some(model("minilm")),
                            _ => Some(model("other")),
                        },
                    }
                }
                Step::Remove { document: n } => KnowledgeBaseCommand::RemoveDocument {
                    document_id: document(*n).0,
                },
                Step::Delete => KnowledgeBaseCommand::Delete,
            })
            .collect()
    }

    fn check_step(
        coverage: &Coverage,
        before: &KnowledgeBase,
        command: &KnowledgeBaseCommand,
        decision: &Decision<KnowledgeBaseEvent>,
        after: &KnowledgeBase,
    ) -> TestCaseResult {
        if before.deleted {
            coverage.record("a command to a deleted knowledge base");
            prop_assert!(
                decision.is_err(),
                "a deleted knowledge base accepted {:?}: {:?}",
                command,
                decision
            );
        }
        if after.id.is_none() {
            prop_assert_eq!(
                after,
                &KnowledgeBase::default(),
                "an uncreated knowledge base holds state"
            );
            return Ok(());
        }
        let Some(tenant) = after.tenant_id else {
            return Err(TestCaseError::fail(format!(
                "a knowledge base without a tenant: {after:?}"
            )));
        };
        let name = after.name.as_ref().map(stand_in_plaintext).unwrap_or_default();
        prop_assert!(
            !name.is_empty() && name == name.trim(),
            "name {:?} is not trimmed and non-empty",
            &name
        );
        for document_id in &after.documents {
            prop_assert_eq!(
                owner_of(document_id),
                Some(tenant),
                "knowledge base of {} holds document {} of another tenant",
                tenant,
                document_id
            );
        }
        if before.id.is_some() {
            prop_assert_eq!(
                (before.id, before.tenant_id, &before.name),
                (after.id, after.tenant_id, &after.name),
                "a created knowledge base changed identity"
            );
        }
        Ok(())
    }

    #[test]
    fn replaying_the_events_of_any_command_sequence_rebuilds_the_knowledge_base() {
        check(
            vec(step(), 0..=30),
            &[
                "Create accepted KnowledgeBaseCreated",
                "Create rejected already_exists",
                "Create rejected invalid_input",
                "AddDocument accepted DocumentAddedToKnowledgeBase",
                "AddDocument rejected already_exists",
                "AddDocument rejected not_found",
                "RemoveDocument accepted DocumentRemovedFromKnowledgeBase",
                "RemoveDocument rejected not_found",
                "Delete accepted KnowledgeBaseDeleted",
                "Delete rejected not_found",
                "a command to a deleted knowledge base",
            ],
            |steps, coverage| {
                run_and_replay::<KnowledgeBase>(&commands(&steps), coverage, |before, command, decision, after| {
                    check_step(coverage, before, command, decision, after)
                })
            },
        );
    }
}
