//! Verifying the audit log: the chain on its own, then the chain against
//! the event log.
//!
//! One pass over the records in seq order, beside one pass over the log in
//! log order (records follow log order, so the two merge by position): the
//! memory used is a page of each, whatever the length of the log.

use std::collections::BTreeMap;
use std::fmt;

use actors::store::{EventStore, RecordedEvent};
use domain::LogPosition;
use uuid::Uuid;

use super::chain::{self, Digest, GENESIS_HASH};
use super::{decode_fields, AuditError, AuditLog, AuditRecord, AUDIT_PROJECTION, RECORD_COLUMNS};
use crate::sql::{fetch_all, fetch_optional, Param};

/// Findings beyond this many are counted but not listed.
pub const MAX_LISTED_FINDINGS: usize = 1000;

const PAGE: usize = 500;

/// One thing wrong with the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The record's hash is not the hash of its content: it was modified.
    Modified { seq: i64, event_id: Uuid },
    /// The seq after `after_seq` is `seq`, not `after_seq + 1`: records were
    /// deleted (or renumbered).
    SequenceGap { seq: i64, after_seq: i64 },
    /// The record's `prev_hash` is not the hash of the record before it: a
    /// record was inserted or deleted before it, or the previous one rehashed.
    BrokenLink { seq: i64 },
    /// The record is not later in the log than the record before it.
    OutOfOrder { seq: i64, log_position: LogPosition },
    /// The record's columns cannot be decoded.
    Unreadable { seq: i64, reason: String },
    /// No event of the log up to the checkpoint is the one the record names.
    UnknownEvent {
        seq: i64,
        event_id: Uuid,
        log_position: LogPosition,
    },
    /// The event's data in the log does not hash to the record's data hash.
    DataMismatch {
        seq: i64,
        event_id: Uuid,
        recorded: Digest,
        in_log: Digest,
    },
    /// The event's envelope in the log differs from the record in `fields`.
    EnvelopeMismatch {
        seq: i64,
        event_id: Uuid,
        fields: Vec<&'static str>,
    },
    /// An event of the log up to the checkpoint has no record.
    MissingRecord { event_id: Uuid, log_position: LogPosition },
}

impl Finding {
    /// A stable name of the kind of finding.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Modified { .. } => "modified",
            Finding::SequenceGap { .. } => "sequence_gap",
            Finding::BrokenLink { .. } => "broken_link",
            Finding::OutOfOrder { .. } => "out_of_order",
            Finding::Unreadable { .. } => "unreadable",
            Finding::UnknownEvent { .. } => "unknown_event",
            Finding::DataMismatch { .. } => "data_mismatch",
            Finding::EnvelopeMismatch { .. } => "envelope_mismatch",
            Finding::MissingRecord { .. } => "missing_record",
        }
    }

    /// The seq of the record it is about; `None` for an event without one.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Finding::Modified { seq, .. }
            | Finding::SequenceGap { seq, .. }
            | Finding::BrokenLink { seq }
            | Finding::OutOfOrder { seq, .. }
            | Finding::Unreadable { seq, .. }
            | Finding::UnknownEvent { seq, .. }
            | Finding::DataMismatch { seq, .. }
            | Finding::EnvelopeMismatch { seq, .. } => Some(*seq),
            Finding::MissingRecord { .. } => None,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Modified { seq, event_id } => write!(
                f,
                "seq {seq}: record of event {event_id} was modified: its hash does not match its content"
            ),
            Finding::SequenceGap { seq, after_seq } => write!(
                f,
                "seq {seq}: follows seq {after_seq}, expected seq {}: records were deleted or inserted",
                after_seq + 1
            ),
            Finding::BrokenLink { seq } => write!(
                f,
                "seq {seq}: prev_hash is not the hash of the record before it: a record was inserted or deleted"
            ),
            Finding::OutOfOrder { seq, log_position } => write!(
                f,
                "seq {seq}: log position {log_position} is not after the previous record's"
            ),
            Finding::Unreadable { seq, reason } => write!(f, "seq {seq}: record cannot be read: {reason}"),
            Finding::UnknownEvent {
                seq,
                event_id,
                log_position,
            } => write!(
                f,
                "seq {seq}: event {event_id} at {log_position} is not in the event log"
            ),
            Finding::DataMismatch {
                seq,
                event_id,
                recorded,
                in_log,
            } => write!(
                f,
                "seq {seq}: data of event {event_id} differs from the event log (sha-256 {} recorded, {} in the log)",
                hex::encode(recorded),
                hex::encode(in_log)
            ),
            Finding::EnvelopeMismatch { seq, event_id, fields } => write!(
                f,
                "seq {seq}: event {event_id} differs from the event log in {}",
                fields.join(", ")
            ),
            Finding::MissingRecord { event_id, log_position } => write!(
                f,
                "event {event_id} at {log_position} is in the event log but has no audit record"
            ),
        }
    }
}

/// What [`AuditLog::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The last seq checked: the chain's head when verification began.
    pub head_seq: i64,
    /// The audit checkpoint when verification began; the log is checked up
    /// to it.
    pub checkpoint: LogPosition,
    pub records_checked: u64,
    pub events_checked: u64,
    /// Findings per [`Finding::kind`], all of them.
    pub counts: BTreeMap<&'static str, u64>,
    /// The first [`MAX_LISTED_FINDINGS`] findings, in the order found.
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn total_findings(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Whether a finding of `kind` about `seq` is listed.
    pub fn has(&self, kind: &str, seq: Option<i64>) -> bool {
        self.findings
            .iter()
            .any(|finding| finding.kind() == kind && finding.seq() == seq)
    }

    fn push(&mut self, finding: Finding) {
        *self.counts.entry(finding.kind()).or_default() += 1;
        if self.findings.len() < MAX_LISTED_FINDINGS {
            self.findings.push(finding);
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} audit record(s) up to seq {} against {} event(s) of the log up to {}",
            self.records_checked, self.head_seq, self.events_checked, self.checkpoint
        )?;
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        let listed = self.findings.len() as u64;
        if self.total_findings() > listed {
            writeln!(f, "… and {} more", self.total_findings() - listed)?;
        }
        if self.is_clean() {
            write!(f, "audit log intact")
        } else {
            let counts: Vec<String> = self
                .counts
                .iter()
                .map(|(kind, count)| format!("{kind} {count}"))
                .collect();
            write!(
                f,
                "audit log has {} problem(s): {}",
                self.total_findings(),
                counts.join(", ")
            )
        }
    }
}

/// The log from the start up to `until`, a page at a time.
struct LogCursor<'s> {
    store: &'s dyn EventStore,
    until: LogPosition,
    after: LogPosition,
    page: std::collections::VecDeque<RecordedEvent>,
    exhausted: bool,
}

impl<'s> LogCursor<'s> {
    fn new(store: &'s dyn EventStore, until: LogPosition) -> Self {
        LogCursor {
            store,
            until,
            after: LogPosition::START,
            page: Default::default(),
            exhausted: until == LogPosition::START,
        }
    }

    async fn peek(&mut self) -> Result<Option<&RecordedEvent>, AuditError> {
        if self.page.is_empty() && !self.exhausted {
            let mut events = self.store.read_log(self.after, PAGE).await.map_err(AuditError::Store)?;
            let within = events.partition_point(|event| event.log_position <= self.until);
            if within < events.len() || events.len() < PAGE {
                self.exhausted = true;
            }
            events.truncate(within);
            if let Some(last) = events.last() {
                self.after = last.log_position;
            }
            self.page.extend(events);
        }
        Ok(self.page.front())
    }

    fn advance(&mut self) -> Option<RecordedEvent> {
        self.page.pop_front()
    }
}

impl AuditLog {
    /// Walks the chain and holds it against `store`'s log; see [`Finding`]
    /// for what is reported. Runs beside a live projection: it checks the
    /// chain and the checkpoint as they were together when it began.
    pub async fn verify(&self, store: &dyn EventStore) -> Result<VerifyReport, AuditError> {
        let failed = |action: &str| {
            let action = action.to_owned();
            move |source| AuditError::Database { action, source }
        };
        // one statement, so the head and the checkpoint come from one snapshot
        let snapshot = fetch_optional(
            &self.db,
            "SELECT (SELECT MAX(seq) FROM audit_log) AS head_seq, \
             (SELECT commit_pos FROM projection_checkpoints WHERE name = $1) AS commit_pos, \
             (SELECT position FROM projection_checkpoints WHERE name = $1) AS position",
            &[Param::text(AUDIT_PROJECTION)],
        )
        .await
        .map_err(failed("verify"))?;
        let read = |column: &str| {
            snapshot
                .as_ref()
                .map(|row| row.int(column))
                .transpose()
                .map(Option::flatten)
                .map_err(|reason| AuditError::Corrupt {
                    seq: 0,
                    reason: format!("{column} of the chain head cannot be read: {reason}"),
                })
        };
        let head_seq = read("head_seq")?.unwrap_or(0);
        let checkpoint = match (read("commit_pos")?, read("position")?) {
            (Some(commit), Some(position)) => LogPosition { commit, position },
            _ => LogPosition::START,
        };

        let mut report = VerifyReport {
            head_seq,
            checkpoint,
            records_checked: 0,
            events_checked: 0,
            counts: BTreeMap::new(),
            findings: Vec::new(),
        };
        let mut log = LogCursor::new(store, checkpoint);
        let mut previous_seq = 0i64;
        // None after an unreadable record: there is no hash to link to
        let mut previous_hash = Some(GENESIS_HASH);
        let mut previous_position = LogPosition::START;
        let mut after_seq = 0i64;
        loop {
            let rows = fetch_all(
                &self.db,
                &format!("{RECORD_COLUMNS} WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"),
                &[Param::Int(after_seq), Param::Int(head_seq), Param::Int(PAGE as i64)],
            )
            .await
            .map_err(failed("verify read of records"))?;
            let Some(last) = rows.last() else { break };
            after_seq = last.bookkeeping_int("seq").map_err(failed("verify read of records"))?;
            for row in &rows {
                let seq = row.bookkeeping_int("seq").map_err(failed("verify read of records"))?;
                report.records_checked += 1;
                if seq != previous_seq + 1 {
                    report.push(Finding::SequenceGap {
                        seq,
                        after_seq: previous_seq,
                    });
                }
                previous_seq = seq;
                let record = match decode_fields(row, seq) {
                    Ok(record) => record,
                    Err(reason) => {
                        report.push(Finding::Unreadable { seq, reason });
                        previous_hash = None;
                        continue;
                    }
                };
                if previous_hash.is_some_and(|previous| previous != record.prev_hash) {
                    report.push(Finding::BrokenLink { seq });
                }
                previous_hash = Some(record.hash);
                if !record.hash_matches() {
                    report.push(Finding::Modified {
                        seq,
                        event_id: record.event_id,
                    });
                }
                if record.log_position <= previous_position {
                    report.push(Finding::OutOfOrder {
                        seq,
                        log_position: record.log_position,
                    });
                    continue;
                }
                previous_position = record.log_position;
                check_against_log(&record, &mut log, &mut report).await?;
            }
        }
        while let Some(event) = log.advance_or_load().await? {
            report.events_checked += 1;
            report.push(Finding::MissingRecord {
                event_id: event.event_id,
                log_position: event.log_position,
            });
        }
        Ok(report)
    }
}

impl LogCursor<'_> {
    async fn advance_or_load(&mut self) -> Result<Option<RecordedEvent>, AuditError> {
        self.peek().await?;
        Ok(self.advance())
    }
}

/// Reports the events of the log before `record` as missing, then holds
/// the record against its event.
async fn check_against_log(
    record: &AuditRecord,
    log: &mut LogCursor<'_>,
    report: &mut VerifyReport,
) -> Result<(), AuditError> {
    while let Some(event) = log.peek().await? {
        if event.log_position >= record.log_position {
            break;
        }
        let (event_id, log_position) = (event.event_id, event.log_position);
        log.advance();
        report.events_checked += 1;
        report.push(Finding::MissingRecord { event_id, log_position });
    }
    let at_position = log
        .peek()
        .await?
        .is_some_and(|event| event.log_position == record.log_position && event.event_id == record.event_id);
    if !at_position {
        report.push(Finding::UnknownEvent {
            seq: record.seq,
            event_id: record.event_id,
            log_position: record.log_position,
        });
        return Ok(());
    }
    let Some(event) = log.advance() else {
        return Ok(());
    };
    report.events_checked += 1;
    let in_log = chain::data_sha256(&event.payload);
    if in_log != record.data_sha256 {
        report.push(Finding::DataMismatch {
            seq: record.seq,
            event_id: record.event_id,
            recorded: record.data_sha256,
            in_log,
        });
    }
    let expected = AuditRecord::for_event(record.seq, &event, record.prev_hash);
    let fields = envelope_differences(record, &expected);
    if !fields.is_empty() {
        report.push(Finding::EnvelopeMismatch {
            seq: record.seq,
            event_id: record.event_id,
            fields,
        });
    }
    Ok(())
}

/// The envelope fields in which `record` differs from what its event gives.
fn envelope_differences(record: &AuditRecord, expected: &AuditRecord) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut compare = |name: &'static str, same: bool| {
        if !same {
            fields.push(name);
        }
    };
    compare("stream_id", record.stream_id == expected.stream_id);
    compare("stream_version", record.stream_version == expected.stream_version);
    compare("event_type", record.event_type == expected.event_type);
    compare("recorded_at", record.recorded_at == expected.recorded_at);
    compare("tenant_id", record.tenant_id == expected.tenant_id);
    compare("actor_key_id", record.actor_key_id == expected.actor_key_id);
    compare("correlation_id", record.correlation_id == expected.correlation_id);
    fields
}
