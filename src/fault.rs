//! Fault injection for the crash-safety tests: the operator dies at one chosen point of a
//! reconcile, as a SIGKILL would leave it. Only a build with the `fault-injection` feature
//! (`make test` builds the tests' operator so) reads `LOOPSERVICE_FAULT`; a release build
//! has no such switch, and [`Fault::hit`] does nothing there.

/// Where a reconcile dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Right after a Job is created, before the status that records it is written.
    AfterJobCreate,
    /// Right after the status is written, before its Events, releases and deletes.
    AfterStatusWrite,
    /// Right before an Event is published.
    BeforeEvent,
    /// Right after an Event is published.
    AfterEvent,
    /// Right after a Job's finalizer is taken off.
    AfterRelease,
    /// Right after an old Job is deleted.
    AfterDelete,
}

impl Fault {
    /// Every fault, each with the name `LOOPSERVICE_FAULT` takes.
    pub const ALL: [(Fault, &'static str); 6] = [
        (Fault::AfterJobCreate, "exit-after-job-create"),
        (Fault::AfterStatusWrite, "exit-after-status-write"),
        (Fault::BeforeEvent, "exit-before-event"),
        (Fault::AfterEvent, "exit-after-event"),
        (Fault::AfterRelease, "exit-after-release"),
        (Fault::AfterDelete, "exit-after-delete"),
    ];

    pub fn name(self) -> &'static str {
        Fault::ALL.iter().find(|(f, _)| *f == self).map_or("", |(_, n)| n)
    }

    /// Dies here when `armed` is this fault: the process exits with 137 (as after SIGKILL);
    /// in the crate's own tests the reconcile stops with [`crate::Error::Fault`] instead, so
    /// that a test can start a new instance on the same (mocked) API server.
    pub fn hit(self, armed: Option<Fault>) -> crate::Result<()> {
        if !cfg!(any(test, feature = "fault-injection")) || armed != Some(self) {
            return Ok(());
        }
        tracing::error!(fault = self.name(), "fault injection: the operator dies here");
        if cfg!(test) {
            return Err(crate::Error::Fault(self.name()));
        }
        std::process::exit(137)
    }
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let known: Vec<&str> = Fault::ALL.iter().map(|(_, n)| *n).collect();
        Fault::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(f, _)| *f)
            .ok_or_else(|| format!("unknown fault {s:?} (known: {})", known.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_reads_back_from_its_name_and_an_unknown_name_is_refused() {
        for (f, name) in Fault::ALL {
            assert_eq!(name.parse::<Fault>(), Ok(f));
            assert_eq!(f.name(), name);
        }
        assert!("exit-soon".parse::<Fault>().unwrap_err().contains("exit-after-job-create"));
    }

    #[test]
    fn only_the_armed_fault_stops_a_reconcile() {
        assert!(Fault::AfterRelease.hit(None).is_ok());
        assert!(Fault::AfterRelease.hit(Some(Fault::AfterDelete)).is_ok());
        assert!(matches!(Fault::AfterRelease.hit(Some(Fault::AfterRelease)), Err(crate::Error::Fault("exit-after-release"))));
    }
}
