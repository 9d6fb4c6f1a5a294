//! A Kafka-protocol broker of a test's own, started by `scripts/kafka.sh`,
//! for tests that pause or stop the broker and so must not share one.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct ScriptBroker {
    script: PathBuf,
    state_file: PathBuf,
    brokers: String,
    pid: u32,
}

impl ScriptBroker {
    /// Starts a broker on a free loopback port; panics when it cannot,
    /// since a test cannot go on without it.
    pub fn start() -> ScriptBroker {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh");
        let state_file = std::env::temp_dir().join(format!("neurostash-kafka-test-{}.state", uuid::Uuid::new_v4()));
        let output = Command::new("bash")
            .arg(&script)
            .arg("start")
            .env("NEUROSTASH_KAFKA_STATE", &state_file)
            .output()
            .expect("run scripts/kafka.sh");
        assert!(
            output.status.success(),
            "kafka.sh start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let brokers = stdout.trim().rsplit('=').next().expect("an export line").to_string();
        let state = std::fs::read_to_string(&state_file).expect("state file");
        let pid = state
            .lines()
            .find_map(|line| line.strip_prefix("KAFKA_PID="))
            .map(|pid| pid.trim_matches('\'').parse::<u32>().expect("pid"))
            .expect("KAFKA_PID in the state file");
        ScriptBroker {
            script,
            state_file,
            brokers,
            pid,
        }
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// SIGSTOP: the broker keeps its data but answers nothing, as a broker
    /// behind a network partition would.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.pid);
    }
}

impl Drop for ScriptBroker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .env("NEUROSTASH_KAFKA_STATE", &self.state_file)
            .output();
    }
}
