//! Given/when/then tests of every command of every aggregate, and of the
//! stored form of every event.

use chrono::{DateTime, Duration, Utc};
use domain::document::{
    staging_key, ArtifactRef, Backoff, Document, DocumentCommand, DocumentEvent, DocumentStatus, FileName, Lease,
    ProcessingStage,
};
use domain::event::event_schemas;
use domain::knowledge_base::{
    normalise_category, normalise_name, KnowledgeBase, KnowledgeBaseCommand, KnowledgeBaseEvent,
};
use domain::tenant::{
    ApiKeyScopes, Email, Role, Tenant, TenantCommand, TenantEvent, MAX_ACTIVE_API_KEYS, MAX_KEY_KNOWLEDGE_BASES,
    MAX_WEBHOOKS, MAX_WEBHOOK_URL_BYTES,
};
use domain::testing::{stand_in_sealed, Scenario};
use domain::{
    Aggregate, AnyEvent, ApiKeyId, DocumentId, DomainError, EventDecodeError, EventPayload, KnowledgeBaseId, TenantId,
    SCHEMA_VERSION,
};
use domain::{ChunkingSettings, EmbeddingModel, Protected};
use uuid::Uuid;

/// A fixed instant plus `minutes`; the domain reads no clock.
fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).expect("valid timestamp") + Duration::minutes(minutes)
}

fn is_invalid(expected_field: &'static str) -> impl Fn(&DomainError) -> bool {
    move |error| matches!(error, DomainError::Invalid { field, .. } if *field == expected_field)
}

mod tenant {
    use super::*;

    fn email() -> Email {
        Email::parse("ada@example.com").expect("valid email")
    }

    fn tenant_id() -> TenantId {
        TenantId::for_email("ada@example.com")
    }

    fn registered(role: Role) -> TenantEvent {
        TenantEvent::TenantRegistered {
            tenant_id: tenant_id(),
            email: stand_in_sealed("ada@example.com").into(),
            role,
        }
    }

    fn key(n: usize) -> ApiKeyId {
        ApiKeyId(format!("key-{n}"))
    }

    fn issue(n: usize) -> TenantCommand {
        TenantCommand::IssueApiKey {
            key_id: key(n),
            secret_hash: format!("hash-{n}"),
            label: Some(format!("laptop {n}")),
            expires_at: Some(at(60)),
            scopes: ApiKeyScopes::default(),
        }
    }

    fn issued(n: usize, role: Role) -> TenantEvent {
        TenantEvent::ApiKeyIssued {
            key_id: key(n),
            secret_hash: format!("hash-{n}"),
            role,
            label: Some(format!("laptop {n}")),
            expires_at: Some(at(60)),
            scopes: ApiKeyScopes::default(),
        }
    }

    fn issue_with_label(label: &str) -> TenantCommand {
        TenantCommand::IssueApiKey {
            key_id: key(1),
            secret_hash: "hash".into(),
            label: Some(label.into()),
            expires_at: None,
            scopes: ApiKeyScopes::default(),
        }
    }

    fn issue_scoped(scopes: ApiKeyScopes) -> TenantCommand {
        TenantCommand::IssueApiKey {
            key_id: key(1),
            secret_hash: "hash".into(),
            label: None,
            expires_at: None,
            scopes,
        }
    }

    fn limited_to(count: usize) -> ApiKeyScopes {
        ApiKeyScopes {
            read_only: false,
            knowledge_base_ids: Some(
                (0..count as u128)
                    .map(|n| KnowledgeBaseId(Uuid::from_u128(n + 1)))
                    .collect(),
            ),
        }
    }

    fn revoked(n: usize) -> TenantEvent {
        TenantEvent::ApiKeyRevoked { key_id: key(n) }
    }

    fn revoke(n: usize) -> TenantCommand {
        TenantCommand::RevokeApiKey { key_id: key(n) }
    }

    #[test]
    fn register_records_the_tenant_under_the_id_derived_from_its_email() {
        let state = Scenario::<Tenant>::given_no_events()
            .when(TenantCommand::Register {
                email: email(),
                sealed_email: stand_in_sealed("ada@example.com"),
                role: Role::Admin,
            })
            .then_expect([registered(Role::Admin)]);
        assert_eq!(state.id, Some(tenant_id()));
        assert_eq!(state.role, Some(Role::Admin));
        assert!(state.api_keys.is_empty());
    }

    #[test]
    fn a_key_rotation_is_recorded_by_its_public_id_only() {
        Scenario::<Tenant>::given([registered(Role::User)])
            .when(TenantCommand::RecordKeyRotation {
                key_id: "0123456789abcdef".into(),
            })
            .then_expect([TenantEvent::EncryptionKeyRotated {
                key_id: "0123456789abcdef".into(),
            }]);
        Scenario::<Tenant>::given([registered(Role::User)])
            .when(TenantCommand::RecordKeyRotation {
                key_id: "not a key id".into(),
            })
            .then_error_code("invalid_input");
        Scenario::<Tenant>::given_no_events()
            .when(TenantCommand::RecordKeyRotation {
                key_id: "0123456789abcdef".into(),
            })
            .then_error_code("not_found");
    }

    #[test]
    fn an_erased_tenant_takes_no_command_and_erasing_again_is_a_retry() {
        let erased = TenantEvent::TenantErased {
            erasure_id: Uuid::from_u128(1),
        };
        let state = Scenario::<Tenant>::given([registered(Role::User)])
            .when(TenantCommand::Erase {
                erasure_id: Uuid::from_u128(1),
            })
            .then_expect([erased.clone()]);
        assert_eq!(state.erased, Some(Uuid::from_u128(1)));
        assert!(state.email.is_none() && state.api_keys.is_empty());
        Scenario::<Tenant>::given([registered(Role::User), erased.clone()])
            .when(TenantCommand::Erase {
                erasure_id: Uuid::from_u128(2),
            })
            .then_expect([]);
        Scenario::<Tenant>::given([registered(Role::User), erased.clone()])
            .when(TenantCommand::RevokeApiKey { key_id: key(1) })
            .then_error_code("not_found");
        Scenario::<Tenant>::given([registered(Role::User), erased])
            .when(TenantCommand::Register {
                email: email(),
                sealed_email: stand_in_sealed("ada@example.com"),
                role: Role::User,
            })
            .then_error_code("conflict");
        Scenario::<Tenant>::given_no_events()
            .when(TenantCommand::Erase {
                erasure_id: Uuid::from_u128(3),
            })
            .then_error_code("not_found");
    }

    #[test]
    fn register_twice_is_already_exists() {
        Scenario::<Tenant>::given([registered(Role::User)])
            .when(TenantCommand::Register {
                email: email(),
                sealed_email: stand_in_sealed("ada@example.com"),
                role: Role::Admin,
            })
            .then_reject(|error| {
                matches!(error, DomainError::AlreadyExists { entity: "tenant", id } if *id == tenant_id().to_string())
            });
    }

    #[test]
    fn email_is_trimmed_and_lowercased() {
        let parsed = Email::parse("  Ada@Example.COM \n").expect("valid email");
        assert_eq!(parsed.as_str(), "ada@example.com");
    }

    #[test]
    fn malformed_emails_are_invalid() {
        let too_long = format!("{}@example.com", "a".repeat(250));
        for raw in [
            "",
            "   ",
            "ada.example.com",
            "@example.com",
            "ada@",
            "ada@localhost",
            "ada@b@example.com",
            "ada lovelace@example.com",
            "ada\u{7}@example.com",
            too_long.as_str(),
        ] {
            let error = Email::parse(raw).expect_err(raw);
            assert!(is_invalid("email")(&error), "{raw:?} gave {error:?}");
            assert_eq!(error.code(), "invalid_input");
        }
    }

    #[test]
    fn roles_parse_case_insensitively() {
        assert_eq!("user".parse::<Role>(), Ok(Role::User));
        assert_eq!("Admin".parse::<Role>(), Ok(Role::Admin));
        assert!(is_invalid("role")(&"root".parse::<Role>().expect_err("not a role")));
    }

    #[test]
    fn an_issued_key_carries_the_role_of_its_tenant() {
        let state = Scenario::<Tenant>::given([registered(Role::Admin)])
            .when(issue(1))
            .then_expect([issued(1, Role::Admin)]);
        let key_state = &state.api_keys[&key(1)];
        assert!(!key_state.revoked);
        assert_eq!(key_state.expires_at, Some(at(60)));
    }

    #[test]
    fn an_unregistered_tenant_cannot_issue_or_revoke_keys() {
        Scenario::<Tenant>::given_no_events()
            .when(issue(1))
            .then_error_code("not_found");
        Scenario::<Tenant>::given_no_events()
            .when(revoke(1))
            .then_error_code("not_found");
    }

    #[test]
    fn a_key_id_is_issued_once() {
        Scenario::<Tenant>::given([registered(Role::User), issued(1, Role::User)])
            .when(issue(1))
            .then_reject(|error| matches!(error, DomainError::AlreadyExists { entity: "api key", .. }));
    }

    #[test]
    fn a_revoked_key_id_is_not_issued_again() {
        Scenario::<Tenant>::given([registered(Role::User), issued(1, Role::User), revoked(1)])
            .when(issue(1))
            .then_error_code("already_exists");
    }

    #[test]
    fn labels_are_at_most_100_printable_characters() {
        Scenario::<Tenant>::given([registered(Role::User)])
            .when(issue_with_label(&"é".repeat(100)))
            .then_expect([TenantEvent::ApiKeyIssued {
                key_id: key(1),
                secret_hash: "hash".into(),
                role: Role::User,
                label: Some("é".repeat(100)),
                expires_at: None,
                scopes: ApiKeyScopes::default(),
            }]);
        for label in ["x".repeat(101), "tab\there".into(), "bell\u{7}".into()] {
            Scenario::<Tenant>::given([registered(Role::User)])
                .when(issue_with_label(&label))
                .then_reject(is_invalid("label"));
        }
    }

    #[test]
    fn an_issued_key_carries_its_scopes() {
        let scopes = ApiKeyScopes {
            read_only: true,
            ..limited_to(2)
        };
        Scenario::<Tenant>::given([registered(Role::Admin)])
            .when(issue_scoped(scopes.clone()))
            .then_expect([TenantEvent::ApiKeyIssued {
                key_id: key(1),
                secret_hash: "hash".into(),
                role: Role::Admin,
                label: None,
                expires_at: None,
                scopes,
            }]);
    }

    #[test]
    fn a_key_is_limited_to_1_to_100_distinct_knowledge_bases() {
        for count in [1, MAX_KEY_KNOWLEDGE_BASES] {
            Scenario::<Tenant>::given([registered(Role::User)])
                .when(issue_scoped(limited_to(count)))
                .then_expect([TenantEvent::ApiKeyIssued {
                    key_id: key(1),
                    secret_hash: "hash".into(),
                    role: Role::User,
                    label: None,
                    expires_at: None,
                    scopes: limited_to(count),
                }]);
        }
        for count in [0, MAX_KEY_KNOWLEDGE_BASES + 1] {
            Scenario::<Tenant>::given([registered(Role::User)])
                .when(issue_scoped(limited_to(count)))
                .then_reject(is_invalid("knowledge_base_ids"));
        }
        let mut twice = limited_to(3);
        let ids = twice.knowledge_base_ids.as_mut().unwrap();
        ids.push(ids[1]);
        let error = Scenario::<Tenant>::given([registered(Role::User)])
            .when(issue_scoped(twice))
            .then_reject(is_invalid("knowledge_base_ids"));
        assert!(error.to_string().contains(&Uuid::from_u128(2).to_string()), "{error}");
    }

    #[test]
    fn at_most_max_active_api_keys_are_held_at_once() {
        let full: Vec<TenantEvent> = std::iter::once(registered(Role::User))
            .chain((0..MAX_ACTIVE_API_KEYS).map(|n| issued(n, Role::User)))
            .collect();
        let error = Scenario::<Tenant>::given(full.clone())
            .when(issue(MAX_ACTIVE_API_KEYS))
            .then_error_code("conflict");
        assert!(error.to_string().contains(&tenant_id().to_string()), "{error}");

        // a revoked key frees its slot
        let one_revoked = full.into_iter().chain([revoked(7)]);
        Scenario::<Tenant>::given(one_revoked)
            .when(issue(MAX_ACTIVE_API_KEYS))
            .then_expect([issued(MAX_ACTIVE_API_KEYS, Role::User)]);
    }

    #[test]
    fn revoke_marks_the_key_revoked() {
        let state = Scenario::<Tenant>::given([registered(Role::User), issued(1, Role::User)])
            .when(revoke(1))
            .then_expect([revoked(1)]);
        assert!(state.api_keys[&key(1)].revoked);
    }

    #[test]
    fn revoking_twice_is_an_accepted_no_op() {
        let state = Scenario::<Tenant>::given([registered(Role::User), issued(1, Role::User), revoked(1)])
            .when(revoke(1))
            .then_expect_no_events();
        assert!(state.api_keys[&key(1)].revoked);
    }

    #[test]
    fn revoking_an_unknown_key_is_not_found() {
        Scenario::<Tenant>::given([registered(Role::User), issued(1, Role::User)])
            .when(revoke(2))
            .then_reject(|error| matches!(error, DomainError::NotFound { entity: "api key", id } if id == "key-2"));
    }

    fn register_webhook(id: u128, url: &str, events: &[&str]) -> TenantCommand {
        TenantCommand::RegisterWebhook {
            webhook_id: Uuid::from_u128(id),
            url: url.into(),
            event_types: events.iter().map(|name| (*name).to_owned()).collect(),
            secret: stand_in_sealed("secret"),
        }
    }

    #[test]
    fn a_webhook_is_registered_with_its_types_sorted_and_deduplicated() {
        let state = Scenario::<Tenant>::given([registered(Role::User)])
            .when(register_webhook(
                1,
                " https://hooks.example.com/x ",
                &["TextChunked", "DocumentProcessed", "TextChunked"],
            ))
            .then_expect([TenantEvent::WebhookRegistered {
                webhook_id: Uuid::from_u128(1),
                url: "https://hooks.example.com/x".into(),
                event_types: vec!["DocumentProcessed".into(), "TextChunked".into()],
                secret: stand_in_sealed("secret"),
            }]);
        assert!(state.webhooks.contains(&Uuid::from_u128(1)));
    }

    #[test]
    fn webhooks_refuse_bad_urls_unknown_types_and_more_than_the_maximum() {
        for (url, events) in [
            ("ftp://example.com", &["*"][..]),
            ("https://", &["*"]),
            ("https:///path", &["*"]),
            ("http://example.com/a b", &["*"]),
            ("http://example.com", &[]),
            ("http://example.com", &["Nope"]),
            ("http://example.com", &["TenantErased"]),
        ] {
            Scenario::<Tenant>::given([registered(Role::User)])
                .when(register_webhook(1, url, events))
                .then_error_code("invalid_input");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_WEBHOOK_URL_BYTES));
        Scenario::<Tenant>::given([registered(Role::User)])
            .when(register_webhook(1, &long, &["*"]))
            .then_reject(is_invalid("url"));
        let mut given = vec![registered(Role::User)];
        for id in 0..MAX_WEBHOOKS as u128 {
            given.push(TenantEvent::WebhookRegistered {
                webhook_id: Uuid::from_u128(id + 100),
                url: "https://example.com".into(),
                event_types: vec!["*".into()],
                secret: stand_in_sealed("secret"),
            });
        }
        Scenario::<Tenant>::given(given)
            .when(register_webhook(1, "https://example.com", &["*"]))
            .then_reject(is_invalid("webhooks"));
    }

    #[test]
    fn a_webhook_is_removed_once_and_an_erased_tenant_has_none() {
        let registered_hook = TenantEvent::WebhookRegistered {
            webhook_id: Uuid::from_u128(1),
            url: "https://example.com".into(),
            event_types: vec!["*".into()],
            secret: stand_in_sealed("secret"),
        };
        let state = Scenario::<Tenant>::given([registered(Role::User), registered_hook.clone()])
            .when(TenantCommand::RemoveWebhook {
                webhook_id: Uuid::from_u128(1),
            })
            .then_expect([TenantEvent::WebhookRemoved {
                webhook_id: Uuid::from_u128(1),
            }]);
        assert!(state.webhooks.is_empty());
        Scenario::<Tenant>::given([registered(Role::User)])
            .when(TenantCommand::RemoveWebhook {
                webhook_id: Uuid::from_u128(1),
            })
            .then_error_code("not_found");
        let erased = TenantEvent::TenantErased {
            erasure_id: Uuid::from_u128(3),
        };
        let state = Tenant::replay(&[registered(Role::User), registered_hook, erased]);
        assert!(state.webhooks.is_empty());
    }
}

mod document {
    use super::*;

    fn owner() -> TenantId {
        TenantId::for_email("ada@example.com")
    }

    fn other_tenant() -> TenantId {
        TenantId::for_email("bob@example.com")
    }

    fn name(raw: &str) -> FileName {
        FileName::parse(raw).expect("valid file name")
    }

    fn document_id() -> DocumentId {
        DocumentId::for_file(owner(), "report.pdf")
    }

    fn register_as(document_id: DocumentId, tenant_id: TenantId, file_name: &str) -> DocumentCommand {
        DocumentCommand::Register {
            document_id,
            tenant_id,
            file_name: name(file_name),
            sealed_file_name: stand_in_sealed(file_name),
            content_type: "application/pdf".into(),
            size_bytes: 1234,
            sha256: "ab".repeat(32),
            object_key: format!("uploads/{document_id}"),
            knowledge_base_id: None,
        }
    }

    fn register() -> DocumentCommand {
        register_as(document_id(), owner(), "report.pdf")
    }

    fn registered() -> DocumentEvent {
        DocumentEvent::DocumentRegistered {
            document_id: document_id(),
            tenant_id: owner(),
            file_name: stand_in_sealed("report.pdf").into(),
            content_type: "application/pdf".into(),
            size_bytes: 1234,
            sha256: "ab".repeat(32),
            object_key: format!("uploads/{}", document_id()),
            knowledge_base_id: None,
        }
    }

    const LEASE_MINUTES: i64 = 5;
    const MAX_ATTEMPTS: u32 = 3;

    fn start(worker: &str, now: DateTime<Utc>) -> DocumentCommand {
        DocumentCommand::StartProcessing {
            worker: worker.into(),
            now,
            lease_for: Duration::minutes(LEASE_MINUTES),
            max_attempts: MAX_ATTEMPTS,
        }
    }

    fn started(worker: &str, attempt: u32, now: DateTime<Utc>) -> DocumentEvent {
        DocumentEvent::ProcessingStarted {
            worker: worker.into(),
            attempt,
            lease_expires_at: now + Duration::minutes(LEASE_MINUTES),
        }
    }

    fn artifact() -> ArtifactRef {
        ArtifactRef {
            object_key: "artifacts/report.json".into(),
            sha256: "cd".repeat(32),
            chunk_count: 12,
            embedder: "hash-embedder".into(),
            dimensions: 384,
            embedder_version: Some("1".into()),
        }
    }

    fn complete(worker: &str) -> DocumentCommand {
        DocumentCommand::CompleteProcessing {
            worker: worker.into(),
            artifact: artifact(),
        }
    }

    fn fail(worker: &str, reason: &str) -> DocumentCommand {
        DocumentCommand::FailProcessing {
            worker: worker.into(),
            reason: reason.into(),
        }
    }

    fn processed() -> DocumentEvent {
        DocumentEvent::DocumentProcessed { artifact: artifact() }
    }

    fn deleted() -> DocumentEvent {
        DocumentEvent::DocumentDeleted {}
    }

    #[test]
    fn register_records_a_pending_document() {
        let state = Scenario::<Document>::given_no_events()
            .when(register())
            .then_expect([registered()]);
        assert_eq!(state.id, Some(document_id()));
        assert_eq!(state.tenant_id, Some(owner()));
        assert_eq!(state.status, Some(DocumentStatus::Pending));
        assert_eq!(state.attempts, 0);
        assert_eq!(state.lease, None);
    }

    #[test]
    fn register_twice_is_already_exists() {
        Scenario::<Document>::given([registered()])
            .when(register())
            .then_reject(|error| matches!(error, DomainError::AlreadyExists { entity: "document", .. }));
    }

    #[test]
    fn the_document_id_must_be_derived_from_tenant_and_file_name() {
        // another file name of the same tenant
        Scenario::<Document>::given_no_events()
            .when(register_as(document_id(), owner(), "other.pdf"))
            .then_reject(is_invalid("document_id"));
        // the same file name of another tenant
        Scenario::<Document>::given_no_events()
            .when(register_as(document_id(), other_tenant(), "report.pdf"))
            .then_reject(is_invalid("document_id"));
        // a random id
        Scenario::<Document>::given_no_events()
            .when(register_as(DocumentId(Uuid::new_v4()), owner(), "report.pdf"))
            .then_reject(is_invalid("document_id"));
    }

    #[test]
    fn a_deleted_document_can_be_registered_again_from_scratch() {
        let state = Scenario::<Document>::given([registered(), started("w1", 1, at(0)), processed(), deleted()])
            .when(register())
            .then_expect([registered()]);
        assert_eq!(state, Document::replay(&[registered()]));
        assert!(!state.deleted);
        assert_eq!(state.artifact, None);
    }

    #[test]
    fn start_processing_takes_the_lease_of_a_pending_document() {
        let state = Scenario::<Document>::given([registered()])
            .when(start("w1", at(0)))
            .then_expect([started("w1", 1, at(0))]);
        assert_eq!(state.status, Some(DocumentStatus::Processing));
        assert_eq!(state.attempts, 1);
        assert_eq!(
            state.lease,
            Some(Lease {
                worker: "w1".into(),
                expires_at: at(LEASE_MINUTES),
            })
        );
    }

    #[test]
    fn a_live_lease_of_another_worker_is_lease_held() {
        let error = Scenario::<Document>::given([registered(), started("w1", 1, at(0))])
            .when(start("w2", at(LEASE_MINUTES) - Duration::seconds(1)))
            .then_error_code("lease_held");
        assert_eq!(
            error,
            DomainError::LeaseHeld {
                document_id: document_id().to_string(),
                holder: "w1".into(),
                until: at(LEASE_MINUTES),
            }
        );
    }

    #[test]
    fn the_holder_asking_again_is_an_accepted_no_op() {
        let state = Scenario::<Document>::given([registered(), started("w1", 1, at(0))])
            .when(start("w1", at(1)))
            .then_expect_no_events();
        assert_eq!(state.attempts, 1);
    }

    #[test]
    fn an_expired_lease_is_taken_over_with_the_next_attempt() {
        // the lease ends at its expiry instant: taking over exactly then is allowed
        let takeover_at = at(LEASE_MINUTES);
        let state = Scenario::<Document>::given([registered(), started("w1", 1, at(0))])
            .when(start("w2", takeover_at))
            .then_expect([started("w2", 2, takeover_at)]);
        assert_eq!(state.attempts, 2);
        assert_eq!(state.lease.map(|lease| lease.worker), Some("w2".into()));
    }

    const BACKOFF: Backoff = Backoff {
        base: Duration::seconds(2),
        max: Duration::seconds(30),
    };

    fn schedule_retry(worker: &str, now: DateTime<Utc>) -> DocumentCommand {
        DocumentCommand::ScheduleRetry {
            worker: worker.into(),
            reason: "object store unreachable".into(),
            now,
            max_attempts: MAX_ATTEMPTS,
            backoff: BACKOFF,
        }
    }

    fn retry_scheduled(attempt: u32, retry_at: DateTime<Utc>) -> DocumentEvent {
        DocumentEvent::RetryScheduled {
            attempt,
            reason: "object store unreachable".into(),
            retry_at,
        }
    }

    #[test]
    fn backoff_doubles_from_its_base_up_to_its_cap() {
        let delays: Vec<i64> = (1..=7).map(|attempt| BACKOFF.delay(attempt).num_seconds()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(BACKOFF.delay(0), Duration::seconds(2), "no attempt yet is the base");
        assert_eq!(BACKOFF.delay(u32::MAX), Duration::seconds(30), "no overflow");
    }

    #[test]
    fn a_failure_that_may_pass_schedules_a_retry_after_the_backoff() {
        let state = Scenario::<Document>::given([registered(), started("w1", 1, at(0))])
            .when(schedule_retry("w1", at(1)))
            .then_expect([retry_scheduled(1, at(1) + Duration::seconds(2))]);
        assert_eq!(state.status, Some(DocumentStatus::Pending));
        assert_eq!(state.lease, None);
        assert_eq!(state.attempts, 1);
        assert_eq!(state.error.as_deref(), Some("object store unreachable"));
    }

    #[test]
    fn only_the_lease_holder_schedules_a_retry() {
        Scenario::<Document>::given([registered(), started("w1", 1, at(0))])
            .when(schedule_retry("w2", at(1)))
            .then_error_code("not_lease_holder");
    }

    #[test]
    fn a_retry_is_not_taken_before_it_is_due_and_is_the_next_attempt_after() {
        let due = at(1) + Duration::seconds(2);
        let given = [registered(), started("w1", 1, at(0)), retry_scheduled(1, due)];
        let error = Scenario::<Document>::given(given.clone())
            .when(start("w2", due - Duration::milliseconds(1)))
            .then_error_code("retry_not_due");
        assert_eq!(
            error,
            DomainError::RetryNotDue {
                document_id: document_id().to_string(),
                at: due,
            }
        );
        let state = Scenario::<Document>::given(given)
            .when(start("w2", due))
            .then_expect([started("w2", 2, due)]);
        assert_eq!(state.attempts, 2);
        assert_eq!(state.retry_at, None);
    }

    #[test]
    fn the_last_attempt_failing_fails_the_document_with_the_count_and_reason() {
        let state = Scenario::<Document>::given([
            registered(),
            started("w1", 1, at(0)),
            retry_scheduled(1, at(1)),
            started("w1", 2, at(1)),
            retry_scheduled(2, at(2)),
            started("w1", 3, at(2)),
        ])
        .when(schedule_retry("w1", at(3)))
        .then_expect([DocumentEvent::ProcessingFailed {
            reason: "gave up after 3 attempts: object store unreachable".into(),
            attempt: 3,
        }]);
        assert_eq!(state.status, Some(DocumentStatus::Failed));
    }

    #[test]
    fn a_failed_document_is_retried_on_request_with_fresh_attempts() {
        let failed = DocumentEvent::ProcessingFailed {
            reason: "cannot read it".into(),
            attempt: 3,
        };
        let history = [registered(), started("w1", 3, at(0)), failed];
        let state = Scenario::<Document>::given(history.clone())
            .when(DocumentCommand::Retry)
            .then_expect([DocumentEvent::RetryRequested {}]);
        assert_eq!(state.status, Some(DocumentStatus::Pending));
        assert_eq!((state.attempts, state.error, state.retry_at), (0, None, None));
        let retried = history.into_iter().chain([DocumentEvent::RetryRequested {}]);
        let state = Scenario::<Document>::given(retried)
            .when(start("w2", at(5)))
            .then_expect([started("w2", 1, at(5))]);
        assert_eq!(state.attempts, 1);
    }

    #[test]
    fn only_a_failed_document_is_retried_on_request() {
        for given in [
            vec![registered()],
            vec![registered(), started("w1", 1, at(0))],
            vec![
                registered(),
                started("w1", 1, at(0)),
                DocumentEvent::DocumentProcessed { artifact: artifact() },
            ],
        ] {
            Scenario::<Document>::given(given)
                .when(DocumentCommand::Retry)
                .then_error_code("conflict");
        }
        Scenario::<Document>::given([registered(), DocumentEvent::DocumentDeleted {}])
            .when(DocumentCommand::Retry)
            .then_error_code("not_found");
    }

    #[test]
    fn the_lease_holder_records_the_stages_of_its_attempt() {
        let given = [
            registered(),
            started("w1", 1, at(0)),
            started("w2", 2, at(LEASE_MINUTES)),
        ];
        let stage = |stage: ProcessingStage| DocumentCommand::RecordStage {
            worker: "w2".into(),
            stage,
        };
        for (command, event) in [
            (
                stage(ProcessingStage::Extracted {
                    characters: 4096,
                    pages: Some(3),
                }),
                DocumentEvent::TextExtracted {
                    attempt: 2,
                    characters: 4096,
                    pages: Some(3),
                },
            ),
            (
                stage(ProcessingStage::Chunked {
                    chunk_count: 40,
                    settings: Some(ChunkingSettings {
                        max_tokens: 200,
                        overlap_tokens: 32,
                    }),
                    tokenizer: Some("words-v1".into()),
                }),
                DocumentEvent::TextChunked {
                    attempt: 2,
                    chunk_count: 40,
                    settings: Some(ChunkingSettings {
                        max_tokens: 200,
                        overlap_tokens: 32,
                    }),
                    tokenizer: Some("words-v1".into()),
                },
            ),
            (
                stage(ProcessingStage::Embedded { batch: 2, batches: 2 }),
                DocumentEvent::EmbeddingBatchCompleted {
                    attempt: 2,
                    batch: 2,
                    batches: 2,
                },
            ),
        ] {
            let state = Scenario::<Document>::given(given.clone())
                .when(command)
                .then_expect([event]);
            assert_eq!(state, Document::replay(&given), "a stage changes no state");
        }
        // the worker whose lease expired may not report for the new attempt
        Scenario::<Document>::given(given.clone())
            .when(DocumentCommand::RecordStage {
                worker: "w1".into(),
                stage: ProcessingStage::Chunked {
                    chunk_count: 1,
                    settings: None,
                    tokenizer: None,
                },
            })
            .then_error_code("not_lease_holder");
        for (batch, batches) in [(0, 2), (3, 2)] {
            Scenario::<Document>::given(given.clone())
                .when(stage(ProcessingStage::Embedded { batch, batches }))
                .then_reject(is_invalid("batch"));
        }
        Scenario::<Document>::given([registered()])
            .when(stage(ProcessingStage::Chunked {
                chunk_count: 1,
                settings: None,
                tokenizer: None,
            }))
            .then_error_code("not_lease_holder");
    }

    fn register_bytes(sha256: &str) -> DocumentCommand {
        DocumentCommand::Register {
            document_id: document_id(),
            tenant_id: owner(),
            file_name: FileName::parse("report.pdf").unwrap(),
            sealed_file_name: stand_in_sealed("report.pdf"),
            content_type: "application/pdf".into(),
            size_bytes: 99,
            sha256: sha256.into(),
            object_key: format!("tenants/x/documents/{}/v2", document_id()),
            knowledge_base_id: None,
        }
    }

    #[test]
    fn other_bytes_under_a_live_documents_name_are_its_next_version() {
        let processed = DocumentEvent::DocumentProcessed { artifact: artifact() };
        let state = Scenario::<Document>::given([registered(), started("w1", 1, at(0)), processed])
            .when(register_bytes(&"cd".repeat(32)))
            .then_expect([DocumentEvent::DocumentVersionAdded {
                version: 2,
                content_type: "application/pdf".into(),
                size_bytes: 99,
                sha256: "cd".repeat(32),
                object_key: format!("tenants/x/documents/{}/v2", document_id()),
            }]);
        assert_eq!(state.version, 2);
        assert_eq!(state.status, Some(DocumentStatus::Pending));
        assert_eq!((state.attempts, state.artifact, state.lease), (0, None, None));
        assert_eq!(
            state.object_key,
            Some(format!("tenants/x/documents/{}/v2", document_id()))
        );
    }

    #[test]
    fn a_new_version_ends_the_lease_on_the_old_and_the_same_bytes_are_no_version() {
        let given = [registered(), started("w1", 1, at(0))];
        let state = Scenario::<Document>::given(given.clone())
            .when(register_bytes(&"cd".repeat(32)))
            .then_expect([DocumentEvent::DocumentVersionAdded {
                version: 2,
                content_type: "application/pdf".into(),
                size_bytes: 99,
                sha256: "cd".repeat(32),
                object_key: format!("tenants/x/documents/{}/v2", document_id()),
            }]);
        assert_eq!(state.lease, None);
        let mut versioned: Vec<DocumentEvent> = given.to_vec();
        versioned.push(DocumentEvent::DocumentVersionAdded {
            version: 2,
            content_type: "application/pdf".into(),
            size_bytes: 99,
            sha256: "cd".repeat(32),
            object_key: "k".into(),
        });
        Scenario::<Document>::given(versioned)
            .when(DocumentCommand::CompleteProcessing {
                worker: "w1".into(),
                artifact: artifact(),
            })
            .then_error_code("not_lease_holder");
        // registered() has "ab" * 32: the same bytes again
        Scenario::<Document>::given([registered()])
            .when(register_bytes(&"ab".repeat(32)))
            .then_error_code("already_exists");
    }

    #[test]
    fn an_expired_lease_after_max_attempts_fails_the_document() {
        let state = Scenario::<Document>::given([
            registered(),
            started("w1", 1, at(0)),
            started("w2", 2, at(10)),
            started("w3", 3, at(20)),
        ])
        .when(start("w4", at(30)))
        .then_expect([DocumentEvent::ProcessingFailed {
            reason: "processing lease expired 3 times without a result".into(),
            attempt: MAX_ATTEMPTS,
        }]);
        assert_eq!(state.status, Some(DocumentStatus::Failed));
        assert_eq!(state.lease, None);
    }

    #[test]
    fn the_lease_holder_completes_processing() {
        let state = Scenario::<Document>::given([registered(), started("w1", 1, at(0))])
            .when(complete("w1"))
            .then_expect([processed()]);
        assert_eq!(state.status, Some(DocumentStatus::Success));
        assert_eq!(state.artifact, Some(artifact()));
        assert_eq!(state.lease, None);
    }

    #[test]
    fn only_the_lease_holder_completes_or_fails() {
        let not_holder = |worker: &'static str| move |error: &DomainError| matches!(error, DomainError::NotLeaseHolder { worker: w, .. } if w == worker);
        let processing = [registered(), started("w1", 1, at(0))];
        Scenario::<Document>::given(processing.clone())
            .when(complete("w2"))
            .then_reject(not_holder("w2"));
        Scenario::<Document>::given(processing)
            .when(fail("w2", "boom"))
            .then_reject(not_holder("w2"));

        // a worker whose expired lease was taken over is no longer the holder
        let taken_over = [registered(), started("w1", 1, at(0)), started("w2", 2, at(10))];
        Scenario::<Document>::given(taken_over.clone())
            .when(complete("w1"))
            .then_reject(not_holder("w1"));
        Scenario::<Document>::given(taken_over)
            .when(fail("w1", "boom"))
            .then_reject(not_holder("w1"));

        // nobody holds the lease of a pending or finished document
        for history in [
            vec![registered()],
            vec![registered(), started("w1", 1, at(0)), processed()],
        ] {
            Scenario::<Document>::given(history.clone())
                .when(complete("w1"))
                .then_error_code("not_lease_holder");
            Scenario::<Document>::given(history)
                .when(fail("w1", "boom"))
                .then_error_code("not_lease_holder");
        }
    }

    #[test]
    fn the_lease_holder_fails_processing_with_a_trimmed_reason() {
        let state = Scenario::<Document>::given([registered(), started("w1", 1, at(0)), started("w2", 2, at(10))])
            .when(fail("w2", "  unsupported encoding \n"))
            .then_expect([DocumentEvent::ProcessingFailed {
                reason: "unsupported encoding".into(),
                attempt: 2,
            }]);
        assert_eq!(state.status, Some(DocumentStatus::Failed));
        assert_eq!(state.error.as_deref(), Some("unsupported encoding"));
        assert_eq!(state.lease, None);
    }

    #[test]
    fn a_failure_reason_is_required_and_truncated_to_2000_characters() {
        Scenario::<Document>::given([registered(), started("w1", 1, at(0))])
            .when(fail("w1", " \n "))
            .then_reject(is_invalid("reason"));
        Scenario::<Document>::given([registered(), started("w1", 1, at(0))])
            .when(fail("w1", &"é".repeat(2500)))
            .then_expect([DocumentEvent::ProcessingFailed {
                reason: "é".repeat(2000),
                attempt: 1,
            }]);
    }

    #[test]
    fn a_processed_or_failed_document_cannot_be_started_again() {
        Scenario::<Document>::given([registered(), started("w1", 1, at(0)), processed()])
            .when(start("w2", at(60)))
            .then_reject(
                |error| matches!(error, DomainError::Conflict(message) if message.contains("already processed")),
            );
        Scenario::<Document>::given([
            registered(),
            started("w1", 1, at(0)),
            DocumentEvent::ProcessingFailed {
                reason: "boom".into(),
                attempt: 1,
            },
        ])
        .when(start("w2", at(60)))
        .then_reject(|error| matches!(error, DomainError::Conflict(message) if message.contains("failed")));
    }

    #[test]
    fn delete_marks_the_document_deleted_and_drops_its_lease() {
        let state = Scenario::<Document>::given([registered(), started("w1", 1, at(0))])
            .when(DocumentCommand::Delete)
            .then_expect([deleted()]);
        assert!(state.deleted);
        assert_eq!(state.lease, None);
    }

    #[test]
    fn every_command_but_register_on_a_deleted_document_is_not_found() {
        for command in [
            start("w1", at(0)),
            complete("w1"),
            fail("w1", "boom"),
            DocumentCommand::Delete,
        ] {
            Scenario::<Document>::given([registered(), started("w1", 1, at(0)), deleted()])
                .when(command)
                .then_reject(|error| {
                    matches!(error, DomainError::NotFound { entity: "document", id } if *id == document_id().to_string())
                });
        }
    }

    #[test]
    fn every_command_but_register_on_an_unregistered_document_is_not_found() {
        for command in [
            start("w1", at(0)),
            complete("w1"),
            fail("w1", "boom"),
            DocumentCommand::Delete,
        ] {
            Scenario::<Document>::given_no_events()
                .when(command)
                .then_error_code("not_found");
        }
    }

    fn upload_id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
    }

    fn declared_sha256() -> String {
        "ef".repeat(32)
    }

    fn request_upload_as(document_id: DocumentId, file_name: &str, now: DateTime<Utc>) -> DocumentCommand {
        DocumentCommand::RequestUpload {
            document_id,
            tenant_id: owner(),
            file_name: name(file_name),
            sealed_file_name: stand_in_sealed(file_name),
            content_type: "application/pdf".into(),
            size_bytes: 1234,
            sha256: Some(declared_sha256()),
            knowledge_base_id: Some(KnowledgeBaseId(Uuid::from_u128(9))),
            upload_id: upload_id(),
            now,
            expires_at: at(60),
        }
    }

    fn request_upload(now: DateTime<Utc>) -> DocumentCommand {
        request_upload_as(document_id(), "report.pdf", now)
    }

    fn upload_requested() -> DocumentEvent {
        DocumentEvent::UploadRequested {
            document_id: document_id(),
            tenant_id: owner(),
            upload_id: upload_id(),
            file_name: stand_in_sealed("report.pdf").into(),
            content_type: "application/pdf".into(),
            size_bytes: 1234,
            sha256: Some(declared_sha256()),
            knowledge_base_id: Some(KnowledgeBaseId(Uuid::from_u128(9))),
            staging_key: format!("staging/{}/{}/{}", owner(), document_id(), upload_id()),
            expires_at: at(60),
        }
    }

    fn complete_upload(size_bytes: u64, sha256: &str, now: DateTime<Utc>) -> DocumentCommand {
        DocumentCommand::CompleteUpload {
            upload_id: upload_id(),
            size_bytes,
            sha256: sha256.into(),
            object_key: format!("tenants/{}/documents/{}/final", owner(), document_id()),
            now,
        }
    }

    fn expire_upload(now: DateTime<Utc>) -> DocumentCommand {
        DocumentCommand::ExpireUpload {
            upload_id: upload_id(),
            now,
        }
    }

    #[test]
    fn requesting_an_upload_opens_it_without_registering_the_document() {
        let state = Scenario::<Document>::given_no_events()
            .when(request_upload(at(0)))
            .then_expect([upload_requested()]);
        assert_eq!(state.id, None, "not a document until completed");
        let pending = state.pending_upload.expect("the upload is pending");
        assert_eq!(pending.staging_key, staging_key(owner(), document_id(), upload_id()));
        assert_eq!(pending.expires_at, at(60));
        assert_eq!(pending.size_bytes, 1234);
    }

    #[test]
    fn an_upload_is_refused_for_a_live_document_or_beside_an_open_one() {
        Scenario::<Document>::given([registered()])
            .when(request_upload(at(0)))
            .then_error_code("already_exists");
        Scenario::<Document>::given([upload_requested()])
            .when(request_upload(at(1)))
            .then_error_code("upload_pending");
        // expired but not cleaned up yet: the cleaner still has bytes to delete
        Scenario::<Document>::given([upload_requested()])
            .when(request_upload(at(90)))
            .then_error_code("upload_pending");
        // and a direct upload of the same name waits too
        Scenario::<Document>::given([upload_requested()])
            .when(register())
            .then_error_code("upload_pending");
        // a deleted document takes a new upload, like a new registration
        Scenario::<Document>::given([registered(), deleted()])
            .when(request_upload(at(0)))
            .then_expect([upload_requested()]);
    }

    #[test]
    fn an_upload_request_is_validated() {
        Scenario::<Document>::given_no_events()
            .when(request_upload_as(
                DocumentId::for_file(other_tenant(), "report.pdf"),
                "report.pdf",
                at(0),
            ))
            .then_reject(is_invalid("document_id"));
        Scenario::<Document>::given_no_events()
            .when(request_upload(at(60)))
            .then_reject(is_invalid("expires_at"));
        for bad in ["EF".repeat(32), "ef".repeat(31), "zz".repeat(32)] {
            let mut command = request_upload(at(0));
            if let DocumentCommand::RequestUpload { sha256, .. } = &mut command {
                *sha256 = Some(bad);
            }
            Scenario::<Document>::given_no_events()
                .when(command)
                .then_reject(is_invalid("sha256"));
        }
        let mut command = request_upload(at(0));
        if let DocumentCommand::RequestUpload { content_type, .. } = &mut command {
            *content_type = "  ".into();
        }
        Scenario::<Document>::given_no_events()
            .when(command)
            .then_reject(is_invalid("content_type"));
    }

    #[test]
    fn completing_an_upload_registers_the_document_as_declared() {
        let object_key = format!("tenants/{}/documents/{}/final", owner(), document_id());
        let state = Scenario::<Document>::given([upload_requested()])
            .when(complete_upload(1234, &declared_sha256(), at(59)))
            .then_expect([DocumentEvent::DocumentRegistered {
                document_id: document_id(),
                tenant_id: owner(),
                file_name: stand_in_sealed("report.pdf").into(),
                content_type: "application/pdf".into(),
                size_bytes: 1234,
                sha256: declared_sha256(),
                object_key: object_key.clone(),
                // the knowledge base the upload was opened for: its chunking applies
                knowledge_base_id: Some(KnowledgeBaseId(Uuid::from_u128(9))),
            }]);
        assert_eq!(state.id, Some(document_id()));
        assert_eq!(state.knowledge_base_id, Some(KnowledgeBaseId(Uuid::from_u128(9))));
        assert_eq!(state.status, Some(DocumentStatus::Pending));
        assert_eq!(state.object_key, Some(object_key));
        assert_eq!(state.pending_upload, None);
    }

    #[test]
    fn completing_checks_the_upload_the_time_and_the_bytes() {
        Scenario::<Document>::given_no_events()
            .when(complete_upload(1234, &declared_sha256(), at(0)))
            .then_error_code("no_pending_upload");
        let mut other_upload = complete_upload(1234, &declared_sha256(), at(0));
        if let DocumentCommand::CompleteUpload { upload_id, .. } = &mut other_upload {
            *upload_id = Uuid::from_u128(2);
        }
        Scenario::<Document>::given([upload_requested()])
            .when(other_upload)
            .then_error_code("no_pending_upload");
        Scenario::<Document>::given([upload_requested()])
            .when(complete_upload(1234, &declared_sha256(), at(60)))
            .then_error_code("upload_expired");
        Scenario::<Document>::given([upload_requested()])
            .when(complete_upload(1233, &declared_sha256(), at(0)))
            .then_reject(is_invalid("size"));
        Scenario::<Document>::given([upload_requested()])
            .when(complete_upload(1234, &"00".repeat(32), at(0)))
            .then_reject(is_invalid("sha256"));
        Scenario::<Document>::given([upload_requested()])
            .when(complete_upload(1234, "not a digest", at(0)))
            .then_reject(is_invalid("sha256"));
        // without a declared checksum any digest of the right size does
        let mut without_checksum = upload_requested();
        if let DocumentEvent::UploadRequested { sha256, .. } = &mut without_checksum {
            *sha256 = None;
        }
        let outcome =
            Scenario::<Document>::given([without_checksum]).when(complete_upload(1234, &"00".repeat(32), at(0)));
        assert!(
            matches!(outcome.decision(), Ok(events) if matches!(events[..], [DocumentEvent::DocumentRegistered { .. }])),
            "{:?}",
            outcome.decision()
        );
    }

    #[test]
    fn a_completed_upload_cannot_be_completed_again() {
        let outcome =
            Scenario::<Document>::given([upload_requested()]).when(complete_upload(1234, &declared_sha256(), at(1)));
        let completed = outcome.decision().clone().expect("completed")[0].clone();
        Scenario::<Document>::given([upload_requested(), completed])
            .when(complete_upload(1234, &declared_sha256(), at(2)))
            .then_error_code("no_pending_upload");
    }

    #[test]
    fn a_rejected_upload_is_over_and_the_name_free_again() {
        let rejected = DocumentEvent::UploadRejected {
            upload_id: upload_id(),
            reason: "3 bytes were uploaded, 1234 declared".into(),
        };
        let state = Scenario::<Document>::given([upload_requested()])
            .when(DocumentCommand::RejectUpload {
                upload_id: upload_id(),
                reason: "  3 bytes were uploaded, 1234 declared ".into(),
            })
            .then_expect([rejected.clone()]);
        assert_eq!(state, Document::default());
        Scenario::<Document>::given([upload_requested()])
            .when(DocumentCommand::RejectUpload {
                upload_id: upload_id(),
                reason: " ".into(),
            })
            .then_reject(is_invalid("reason"));
        Scenario::<Document>::given([upload_requested(), rejected.clone()])
            .when(DocumentCommand::RejectUpload {
                upload_id: upload_id(),
                reason: "again".into(),
            })
            .then_error_code("no_pending_upload");
        Scenario::<Document>::given([upload_requested(), rejected])
            .when(request_upload(at(2)))
            .then_expect([upload_requested()]);
    }

    #[test]
    fn an_upload_expires_only_after_its_time_and_once() {
        Scenario::<Document>::given([upload_requested()])
            .when(expire_upload(at(59)))
            .then_error_code("conflict");
        let expired = DocumentEvent::UploadExpired { upload_id: upload_id() };
        let state = Scenario::<Document>::given([upload_requested()])
            .when(expire_upload(at(60)))
            .then_expect([expired.clone()]);
        assert_eq!(state.pending_upload, None);
        Scenario::<Document>::given([upload_requested(), expired.clone()])
            .when(expire_upload(at(61)))
            .then_expect_no_events();
        Scenario::<Document>::given_no_events()
            .when(expire_upload(at(61)))
            .then_expect_no_events();
        // and the file name takes a new upload
        let mut later = request_upload(at(61));
        if let DocumentCommand::RequestUpload { expires_at, .. } = &mut later {
            *expires_at = at(120);
        }
        let outcome = Scenario::<Document>::given([upload_requested(), expired]).when(later);
        assert!(
            matches!(outcome.decision(), Ok(events) if matches!(events[..], [DocumentEvent::UploadRequested { expires_at, .. }] if expires_at == at(120))),
            "{:?}",
            outcome.decision()
        );
    }

    #[test]
    fn a_document_with_only_an_open_upload_takes_no_processing_command() {
        for command in [
            start("w1", at(0)),
            complete("w1"),
            fail("w1", "boom"),
            DocumentCommand::Delete,
        ] {
            Scenario::<Document>::given([upload_requested()])
                .when(command)
                .then_error_code("not_found");
        }
    }
}

mod knowledge_base {
    use super::*;

    fn owner() -> TenantId {
        TenantId::for_email("ada@example.com")
    }

    fn kb_id() -> KnowledgeBaseId {
        KnowledgeBaseId(Uuid::from_u128(42))
    }

    fn own_document(n: u32) -> DocumentId {
        DocumentId::for_file(owner(), &format!("doc-{n}.txt"))
    }

    fn create(name: &str, category: Option<&str>) -> KnowledgeBaseCommand {
        KnowledgeBaseCommand::Create {
            knowledge_base_id: kb_id(),
            tenant_id: owner(),
            name: name.into(),
            category: category.map(Into::into),
            sealed_name: stand_in_sealed(name),
            sealed_category: category.map(stand_in_sealed),
            embedding_model: model("all-MiniLM-L6-v2"),
            chunking: chunking(),
        }
    }

    fn model(name: &str) -> EmbeddingModel {
        EmbeddingModel {
            name: name.into(),
            dimensions: 384,
            version: "sha256:ab".into(),
        }
    }

    fn chunking() -> ChunkingSettings {
        ChunkingSettings {
            max_tokens: 200,
            overlap_tokens: 32,
        }
    }

    fn created() -> KnowledgeBaseEvent {
        KnowledgeBaseEvent::KnowledgeBaseCreated {
            knowledge_base_id: kb_id(),
            tenant_id: owner(),
            name: stand_in_sealed("papers").into(),
            category: Some(stand_in_sealed("research").into()),
            embedding_model: Some(model("all-MiniLM-L6-v2")),
            chunking: Some(chunking()),
        }
    }

    fn add(document_id: DocumentId) -> KnowledgeBaseCommand {
        KnowledgeBaseCommand::AddDocument {
            document_id,
            document_tenant: owner(),
            document_model: None,
        }
    }

    #[test]
    fn a_knowledge_base_takes_only_documents_of_its_model() {
        let state = Scenario::<KnowledgeBase>::given([created()])
            .when(KnowledgeBaseCommand::AddDocument {
                document_id: own_document(1),
                document_tenant: owner(),
                document_model: Some(model("all-MiniLM-L6-v2")),
            })
            .then_expect([added(own_document(1))]);
        assert_eq!(state.embedding_model, Some(model("all-MiniLM-L6-v2")));
        assert_eq!(state.chunking, Some(chunking()));
        Scenario::<KnowledgeBase>::given([created()])
            .when(KnowledgeBaseCommand::AddDocument {
                document_id: own_document(2),
                document_tenant: owner(),
                document_model: Some(model("text-embedding-3-small")),
            })
            .then_error_code("embedding_model_mismatch");
        let mut other_weights = model("all-MiniLM-L6-v2");
        other_weights.version = "sha256:cd".into();
        Scenario::<KnowledgeBase>::given([created()])
            .when(KnowledgeBaseCommand::AddDocument {
                document_id: own_document(3),
                document_tenant: owner(),
                document_model: Some(other_weights),
            })
            .then_error_code("embedding_model_mismatch");
    }

    fn added(document_id: DocumentId) -> KnowledgeBaseEvent {
        KnowledgeBaseEvent::DocumentAddedToKnowledgeBase { document_id }
    }

    fn remove(document_id: DocumentId) -> KnowledgeBaseCommand {
        KnowledgeBaseCommand::RemoveDocument { document_id }
    }

    fn removed(document_id: DocumentId) -> KnowledgeBaseEvent {
        KnowledgeBaseEvent::DocumentRemovedFromKnowledgeBase { document_id }
    }

    fn deleted() -> KnowledgeBaseEvent {
        KnowledgeBaseEvent::KnowledgeBaseDeleted {}
    }

    #[test]
    fn create_keeps_the_sealed_normalised_name_and_category() {
        assert_eq!(normalise_name("  papers ").unwrap(), "papers");
        assert_eq!(normalise_category(" research\n").unwrap(), "research");
        let state = Scenario::<KnowledgeBase>::given_no_events()
            .when(create("papers", Some("research")))
            .then_expect([created()]);
        assert_eq!(state.id, Some(kb_id()));
        assert_eq!(state.tenant_id, Some(owner()));
        assert_eq!(state.name, Some(stand_in_sealed("papers").into()));
        assert!(state.documents.is_empty());
        // what was sealed must be the normalised text, or the sealed name
        // would not be the one the domain checked
        Scenario::<KnowledgeBase>::given_no_events()
            .when(create("  papers ", None))
            .then_reject(is_invalid("name"));
        Scenario::<KnowledgeBase>::given_no_events()
            .when(create("papers", Some(" research\n")))
            .then_reject(is_invalid("category"));
    }

    #[test]
    fn create_without_category() {
        Scenario::<KnowledgeBase>::given_no_events()
            .when(create("papers", None))
            .then_expect([KnowledgeBaseEvent::KnowledgeBaseCreated {
                knowledge_base_id: kb_id(),
                tenant_id: owner(),
                name: stand_in_sealed("papers").into(),
                category: None,
                embedding_model: Some(model("all-MiniLM-L6-v2")),
                chunking: Some(chunking()),
            }]);
    }

    #[test]
    fn names_are_1_to_200_and_categories_1_to_100_printable_characters() {
        Scenario::<KnowledgeBase>::given_no_events()
            .when(create(&"n".repeat(200), Some(&"c".repeat(100))))
            .then_expect([KnowledgeBaseEvent::KnowledgeBaseCreated {
                knowledge_base_id: kb_id(),
                tenant_id: owner(),
                name: stand_in_sealed(&"n".repeat(200)).into(),
                category: Some(stand_in_sealed(&"c".repeat(100)).into()),
                embedding_model: Some(model("all-MiniLM-L6-v2")),
                chunking: Some(chunking()),
            }]);
        for name in [String::new(), "  ".into(), "n".repeat(201), "new\nline".into()] {
            Scenario::<KnowledgeBase>::given_no_events()
                .when(create(&name, None))
                .then_reject(is_invalid("name"));
        }
        for category in [String::new(), "\t".into(), "c".repeat(101), "bell\u{7}".into()] {
            Scenario::<KnowledgeBase>::given_no_events()
                .when(create("papers", Some(&category)))
                .then_reject(is_invalid("category"));
        }
    }

    #[test]
    fn create_twice_is_already_exists_even_after_delete() {
        Scenario::<KnowledgeBase>::given([created()])
            .when(create("papers", None))
            .then_reject(|error| {
                matches!(
                    error,
                    DomainError::AlreadyExists {
                        entity: "knowledge base",
                        ..
                    }
                )
            });
        Scenario::<KnowledgeBase>::given([created(), deleted()])
            .when(create("papers", None))
            .then_error_code("already_exists");
    }

    #[test]
    fn add_document_links_an_own_document() {
        let state = Scenario::<KnowledgeBase>::given([created()])
            .when(add(own_document(1)))
            .then_expect([added(own_document(1))]);
        assert!(state.documents.contains(&own_document(1)));
    }

    #[test]
    fn another_tenants_document_is_not_found() {
        let foreign = DocumentId::for_file(TenantId::for_email("bob@example.com"), "doc-1.txt");
        Scenario::<KnowledgeBase>::given([created()])
            .when(KnowledgeBaseCommand::AddDocument {
                document_id: foreign,
                document_tenant: TenantId::for_email("bob@example.com"),
                document_model: None,
            })
            .then_reject(
                |error| matches!(error, DomainError::NotFound { entity: "document", id } if *id == foreign.to_string()),
            );
    }

    #[test]
    fn adding_a_linked_document_again_is_already_exists() {
        Scenario::<KnowledgeBase>::given([created(), added(own_document(1))])
            .when(add(own_document(1)))
            .then_reject(|error| {
                matches!(
                    error,
                    DomainError::AlreadyExists {
                        entity: "knowledge base document",
                        ..
                    }
                )
            });
    }

    #[test]
    fn remove_document_unlinks_it() {
        let state = Scenario::<KnowledgeBase>::given([created(), added(own_document(1)), added(own_document(2))])
            .when(remove(own_document(1)))
            .then_expect([removed(own_document(1))]);
        assert_eq!(state.documents.into_iter().collect::<Vec<_>>(), [own_document(2)]);
    }

    #[test]
    fn removing_an_unlinked_document_is_not_found() {
        Scenario::<KnowledgeBase>::given([created(), added(own_document(1))])
            .when(remove(own_document(2)))
            .then_reject(|error| {
                matches!(
                    error,
                    DomainError::NotFound {
                        entity: "knowledge base document",
                        ..
                    }
                )
            });
        Scenario::<KnowledgeBase>::given([created(), added(own_document(1)), removed(own_document(1))])
            .when(remove(own_document(1)))
            .then_error_code("not_found");
    }

    #[test]
    fn delete_marks_the_knowledge_base_deleted() {
        let state = Scenario::<KnowledgeBase>::given([created(), added(own_document(1))])
            .when(KnowledgeBaseCommand::Delete)
            .then_expect([deleted()]);
        assert!(state.deleted);
    }

    #[test]
    fn every_command_but_create_on_a_deleted_or_missing_knowledge_base_is_not_found() {
        let commands = || {
            [
                add(own_document(2)),
                remove(own_document(1)),
                KnowledgeBaseCommand::Delete,
            ]
        };
        for command in commands() {
            Scenario::<KnowledgeBase>::given([created(), added(own_document(1)), deleted()])
                .when(command)
                .then_reject(|error| {
                    matches!(error, DomainError::NotFound { entity: "knowledge base", id } if *id == kb_id().to_string())
                });
        }
        for command in commands() {
            Scenario::<KnowledgeBase>::given_no_events()
                .when(command)
                .then_error_code("not_found");
        }
    }
}

mod stored_events {
    use super::*;

    /// One sample of every tenant event; the exhaustive match fails to
    /// compile when a variant is added, so the sample list cannot fall behind.
    fn tenant_events() -> Vec<TenantEvent> {
        let samples = vec![
            TenantEvent::TenantRegistered {
                tenant_id: TenantId::for_email("ada@example.com"),
                email: stand_in_sealed("ada@example.com").into(),
                role: Role::Admin,
            },
            TenantEvent::ApiKeyIssued {
                key_id: ApiKeyId("key-1".into()),
                secret_hash: "hash".into(),
                role: Role::User,
                label: Some("laptop \"quoted\" ✓".into()),
                expires_at: Some(at(60) + Duration::nanoseconds(123_456_789)),
                scopes: ApiKeyScopes {
                    read_only: true,
                    knowledge_base_ids: Some(vec![KnowledgeBaseId(Uuid::from_u128(7))]),
                },
            },
            TenantEvent::ApiKeyIssued {
                key_id: ApiKeyId("key-2".into()),
                secret_hash: "hash".into(),
                role: Role::Admin,
                label: None,
                expires_at: None,
                scopes: ApiKeyScopes::default(),
            },
            TenantEvent::ApiKeyRevoked {
                key_id: ApiKeyId("key-1".into()),
            },
            TenantEvent::EncryptionKeyRotated {
                key_id: "0123456789abcdef".into(),
            },
            TenantEvent::TenantErased {
                erasure_id: Uuid::from_u128(7),
            },
            TenantEvent::WebhookRegistered {
                webhook_id: Uuid::from_u128(9),
                url: "https://hooks.example.com/neurostash?team=a&b=✓".into(),
                event_types: vec!["*".into()],
                secret: stand_in_sealed("0f".repeat(32).as_str()),
            },
            TenantEvent::WebhookRemoved {
                webhook_id: Uuid::from_u128(9),
            },
        ];
        assert_covers_every_variant(&samples, 7, |event| match event {
            TenantEvent::TenantRegistered { .. } => 0,
            TenantEvent::ApiKeyIssued { .. } => 1,
            TenantEvent::ApiKeyRevoked { .. } => 2,
            TenantEvent::EncryptionKeyRotated { .. } => 3,
            TenantEvent::TenantErased { .. } => 4,
            TenantEvent::WebhookRegistered { .. } => 5,
            TenantEvent::WebhookRemoved { .. } => 6,
        });
        samples
    }

    fn document_events() -> Vec<DocumentEvent> {
        let tenant_id = TenantId::for_email("ada@example.com");
        let samples = vec![
            DocumentEvent::DocumentRegistered {
                document_id: DocumentId::for_file(tenant_id, "résumé.pdf"),
                tenant_id,
                file_name: stand_in_sealed("résumé.pdf").into(),
                content_type: "application/pdf".into(),
                size_bytes: u64::MAX,
                sha256: "ab".repeat(32),
                object_key: "uploads/x".into(),
                knowledge_base_id: None,
            },
            DocumentEvent::ProcessingStarted {
                worker: "w1".into(),
                attempt: 1,
                lease_expires_at: at(5) + Duration::nanoseconds(1),
            },
            DocumentEvent::DocumentProcessed {
                artifact: ArtifactRef {
                    object_key: "artifacts/x".into(),
                    sha256: "cd".repeat(32),
                    chunk_count: 3,
                    embedder: "hash-embedder".into(),
                    dimensions: 384,
                    embedder_version: None,
                },
            },
            DocumentEvent::ProcessingFailed {
                reason: "line one\nline two".into(),
                attempt: u32::MAX,
            },
            DocumentEvent::DocumentDeleted {},
            DocumentEvent::UploadRequested {
                document_id: DocumentId::for_file(tenant_id, "résumé.pdf"),
                tenant_id,
                upload_id: Uuid::from_u128(3),
                file_name: stand_in_sealed("résumé.pdf").into(),
                content_type: "application/pdf".into(),
                size_bytes: u64::MAX,
                sha256: Some("ab".repeat(32)),
                knowledge_base_id: Some(KnowledgeBaseId(Uuid::from_u128(7))),
                staging_key: "staging/x/y/z".into(),
                expires_at: at(60) + Duration::nanoseconds(1),
            },
            DocumentEvent::UploadRequested {
                document_id: DocumentId::for_file(tenant_id, "a.txt"),
                tenant_id,
                upload_id: Uuid::from_u128(4),
                file_name: stand_in_sealed("a.txt").into(),
                content_type: "text/plain".into(),
                size_bytes: 0,
                sha256: None,
                knowledge_base_id: None,
                staging_key: "staging/x/y/w".into(),
                expires_at: at(60),
            },
            DocumentEvent::UploadRejected {
                upload_id: Uuid::from_u128(3),
                reason: "size differs".into(),
            },
            DocumentEvent::UploadExpired {
                upload_id: Uuid::from_u128(4),
            },
            DocumentEvent::RetryScheduled {
                attempt: 2,
                reason: "store unreachable: connection refused".into(),
                retry_at: at(7) + Duration::milliseconds(1),
            },
            DocumentEvent::RetryRequested {},
            DocumentEvent::TextExtracted {
                attempt: 1,
                characters: u64::MAX,
                pages: Some(100),
            },
            DocumentEvent::TextExtracted {
                attempt: 2,
                characters: 0,
                pages: None,
            },
            DocumentEvent::TextChunked {
                attempt: 1,
                chunk_count: 12,
                settings: Some(ChunkingSettings {
                    max_tokens: 254,
                    overlap_tokens: 32,
                }),
                tokenizer: Some("all-MiniLM-L6-v2 wordpiece".into()),
            },
            DocumentEvent::EmbeddingBatchCompleted {
                attempt: 1,
                batch: 1,
                batches: 3,
            },
            DocumentEvent::DocumentVersionAdded {
                version: 2,
                content_type: "text/markdown".into(),
                size_bytes: 0,
                sha256: "ef".repeat(32),
                object_key: "tenants/x/documents/y/z".into(),
            },
        ];
        assert_covers_every_variant(&samples, 14, |event| match event {
            DocumentEvent::DocumentRegistered { .. } => 0,
            DocumentEvent::ProcessingStarted { .. } => 1,
            DocumentEvent::DocumentProcessed { .. } => 2,
            DocumentEvent::ProcessingFailed { .. } => 3,
            DocumentEvent::DocumentDeleted { .. } => 4,
            DocumentEvent::UploadRequested { .. } => 5,
            DocumentEvent::UploadRejected { .. } => 6,
            DocumentEvent::UploadExpired { .. } => 7,
            DocumentEvent::RetryScheduled { .. } => 8,
            DocumentEvent::RetryRequested { .. } => 9,
            DocumentEvent::TextExtracted { .. } => 10,
            DocumentEvent::TextChunked { .. } => 11,
            DocumentEvent::EmbeddingBatchCompleted { .. } => 12,
            DocumentEvent::DocumentVersionAdded { .. } => 13,
        });
        samples
    }

    fn knowledge_base_events() -> Vec<KnowledgeBaseEvent> {
        let tenant_id = TenantId::for_email("ada@example.com");
        let document_id = DocumentId::for_file(tenant_id, "a.txt");
        let samples = vec![
            KnowledgeBaseEvent::KnowledgeBaseCreated {
                knowledge_base_id: KnowledgeBaseId(Uuid::from_u128(7)),
                tenant_id,
                name: stand_in_sealed("papers").into(),
                // written before names were sealed: still readable
                category: Some(Protected::Plain("research".into())),
                embedding_model: Some(EmbeddingModel {
                    name: "all-MiniLM-L6-v2".into(),
                    dimensions: 384,
                    version: "sha256:53aa".into(),
                }),
                chunking: Some(ChunkingSettings {
                    max_tokens: 200,
                    overlap_tokens: 32,
                }),
            },
            KnowledgeBaseEvent::KnowledgeBaseCreated {
                knowledge_base_id: KnowledgeBaseId(Uuid::from_u128(8)),
                tenant_id,
                name: Protected::Plain("notes".into()),
                category: None,
                // written before models were pinned
                embedding_model: None,
                chunking: None,
            },
            KnowledgeBaseEvent::DocumentAddedToKnowledgeBase { document_id },
            KnowledgeBaseEvent::DocumentRemovedFromKnowledgeBase { document_id },
            KnowledgeBaseEvent::KnowledgeBaseDeleted {},
        ];
        assert_covers_every_variant(&samples, 4, |event| match event {
            KnowledgeBaseEvent::KnowledgeBaseCreated { .. } => 0,
            KnowledgeBaseEvent::DocumentAddedToKnowledgeBase { .. } => 1,
            KnowledgeBaseEvent::DocumentRemovedFromKnowledgeBase { .. } => 2,
            KnowledgeBaseEvent::KnowledgeBaseDeleted { .. } => 3,
        });
        samples
    }

    fn assert_covers_every_variant<E: std::fmt::Debug>(
        samples: &[E],
        variant_count: usize,
        variant_index: impl Fn(&E) -> usize,
    ) {
        let covered: std::collections::BTreeSet<usize> = samples.iter().map(variant_index).collect();
        assert_eq!(
            covered,
            (0..variant_count).collect(),
            "samples {samples:?} miss a variant"
        );
    }

    /// Every sample, wrapped as the log holds it, with its stream category.
    fn all_events() -> Vec<(&'static str, AnyEvent)> {
        let tenant = tenant_events()
            .into_iter()
            .map(|event| (Tenant::CATEGORY, AnyEvent::Tenant(event)));
        let document = document_events()
            .into_iter()
            .map(|event| (Document::CATEGORY, AnyEvent::Document(event)));
        let knowledge_base = knowledge_base_events()
            .into_iter()
            .map(|event| (KnowledgeBase::CATEGORY, AnyEvent::KnowledgeBase(event)));
        tenant.chain(document).chain(knowledge_base).collect()
    }

    fn stored_form(event: &AnyEvent) -> (&'static str, serde_json::Value) {
        match event {
            AnyEvent::Tenant(event) => (event.event_type(), event.to_data()),
            AnyEvent::Document(event) => (event.event_type(), event.to_data()),
            AnyEvent::KnowledgeBase(event) => (event.event_type(), event.to_data()),
        }
    }

    fn assert_payload_round_trip<E: EventPayload>(event: &E) {
        let data = event.to_data();
        assert!(data.is_object(), "{event:?} stored as {data}");
        // stored as text, read back as text
        let data = serde_json::from_str(&data.to_string()).expect("stored data is json");
        let decoded = E::from_data(event.event_type(), SCHEMA_VERSION, data);
        assert_eq!(decoded.as_ref(), Ok(event));
    }

    #[test]
    fn every_event_decodes_from_its_type_and_data() {
        for event in tenant_events() {
            assert_payload_round_trip(&event);
        }
        for event in document_events() {
            assert_payload_round_trip(&event);
        }
        for event in knowledge_base_events() {
            assert_payload_round_trip(&event);
        }
    }

    #[test]
    fn every_event_decodes_as_any_event_by_its_stream_category() {
        for (category, event) in all_events() {
            let (event_type, data) = stored_form(&event);
            assert_eq!(event.event_type(), event_type);
            let decoded = AnyEvent::decode(category, event_type, SCHEMA_VERSION, data);
            assert_eq!(decoded, Ok(event));
        }
    }

    #[test]
    fn the_stored_data_holds_the_fields_without_the_type_tag() {
        let data = TenantEvent::ApiKeyRevoked {
            key_id: ApiKeyId("key-1".into()),
        }
        .to_data();
        assert_eq!(data, serde_json::json!({ "key_id": "key-1" }));
        assert_eq!(DocumentEvent::DocumentDeleted {}.to_data(), serde_json::json!({}));
    }

    /// Events in logs written before keys had scopes carry no `scopes`
    /// field: they must decode, as unscoped keys, without a new schema
    /// version.
    #[test]
    fn an_api_key_issued_before_scopes_existed_decodes_unscoped() {
        let stored = serde_json::json!({
            "key_id": "0123456789ab",
            "secret_hash": "ab".repeat(32),
            "role": "USER",
            "label": "initial",
            "expires_at": null,
        });
        let decoded = AnyEvent::decode(Tenant::CATEGORY, "ApiKeyIssued", SCHEMA_VERSION, stored);
        assert_eq!(
            decoded,
            Ok(AnyEvent::Tenant(TenantEvent::ApiKeyIssued {
                key_id: ApiKeyId("0123456789ab".into()),
                secret_hash: "ab".repeat(32),
                role: Role::User,
                label: Some("initial".into()),
                expires_at: None,
                scopes: ApiKeyScopes::default(),
            }))
        );
        let partial = serde_json::json!({
            "key_id": "0123456789ab",
            "secret_hash": "hash",
            "role": "ADMIN",
            "scopes": { "read_only": true },
        });
        let Ok(AnyEvent::Tenant(TenantEvent::ApiKeyIssued { scopes, .. })) =
            AnyEvent::decode(Tenant::CATEGORY, "ApiKeyIssued", SCHEMA_VERSION, partial)
        else {
            panic!("a scopes object without knowledge_base_ids does not decode");
        };
        assert_eq!(
            scopes,
            ApiKeyScopes {
                read_only: true,
                knowledge_base_ids: None
            }
        );
    }

    #[test]
    fn an_unknown_schema_version_is_rejected() {
        for (category, event) in all_events() {
            let (event_type, data) = stored_form(&event);
            for schema_version in [0, SCHEMA_VERSION + 1, u16::MAX] {
                let decoded = AnyEvent::decode(category, event_type, schema_version, data.clone());
                assert_eq!(
                    decoded,
                    Err(EventDecodeError::UnsupportedSchemaVersion {
                        event_type: event_type.into(),
                        schema_version,
                    })
                );
            }
        }
    }

    #[test]
    fn an_unknown_category_is_rejected() {
        let decoded = AnyEvent::decode("invoice", "TenantRegistered", SCHEMA_VERSION, serde_json::json!({}));
        assert_eq!(decoded, Err(EventDecodeError::UnknownCategory("invoice".into())));
    }

    #[test]
    fn an_event_under_the_wrong_category_or_type_is_malformed() {
        let revoked = serde_json::json!({ "key_id": "key-1" });
        for (category, event_type) in [
            (Document::CATEGORY, "ApiKeyRevoked"),
            (Tenant::CATEGORY, "ApiKeyExploded"),
            (Tenant::CATEGORY, "TenantRegistered"),
        ] {
            let decoded = AnyEvent::decode(category, event_type, SCHEMA_VERSION, revoked.clone());
            assert!(
                matches!(&decoded, Err(EventDecodeError::Malformed { event_type: t, .. }) if t == event_type),
                "{category}/{event_type} gave {decoded:?}"
            );
        }
    }

    #[test]
    fn the_published_schemas_name_every_event_type() {
        let schemas = event_schemas();
        for (category, event) in all_events() {
            let schema = schemas
                .get(category)
                .unwrap_or_else(|| panic!("no schema for category {category}"))
                .to_string();
            let event_type = event.event_type();
            assert!(
                schema.contains(&format!("\"{event_type}\"")),
                "the {category} schema does not mention {event_type}"
            );
        }
    }
}
