//! The words the operator writes where Kubernetes expects a machine-readable reason: Event
//! reasons, condition types and condition reasons. Each is an enum; its text is one `as_str`,
//! which status, Events, metrics and the kubectl plugin all use.

use std::fmt;

/// A condition's status, as the API spells it.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";

/// The text of a condition status.
pub fn condition_status(value: bool) -> &'static str {
    if value {
        TRUE
    } else {
        FALSE
    }
}

macro_rules! words {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }

            /// The value whose text is `s`.
            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                self == other.as_str()
            }
        }
    };
}

words! {
    /// The types of the LoopService's conditions.
    pub enum ConditionType {
        /// Whether loops run as the spec says (False: suspended, invalid, or something in the way).
        Ready,
        /// Whether the latest finished loop took longer than its interval.
        Overrun,
        /// Whether the latest loops failed.
        Failing,
        /// Whether the operator's own work on the LoopService succeeds; present once it failed.
        Reconciled,
    }
}

words! {
    /// Reasons of Events and conditions.
    pub enum Reason {
        // What happened to a loop (Events, metrics).
        LoopStarted,
        LoopSucceeded,
        LoopFailed,
        LoopOverrun,
        LoopAdopted,
        // A queue (Kueue) admitted a loop's Job (metrics; an Event with --loop-events all).
        LoopAdmitted,
        // Due times skipped past spec.catchUpWindow (Events, metrics).
        LoopsMissed,
        // Why a loop failed (history, lastError, the Failing condition).
        JobFailed,
        DeadlineExceeded,
        JobRejected,
        JobDeleted,
        // Ready.
        Running,
        Queued,
        Waiting,
        Paused,
        Suspended,
        SuspendedAfterFailures,
        Finished,
        InvalidSpec,
        JobNameTaken,
        LoopStuck,
        PodCreateFailed,
        // Overrun.
        LoopOverran,
        OnTime,
        NoLoopFinished,
        // Failing.
        NoFailures,
        // Reconciled.
        ReconcileError,
        Reconciled,
        // A run request that is not a time (Events).
        RunRequestRefused,
        // The Pod template breaks the namespace's PodSecurity `warn` level, not its `enforce`
        // level: the loops run (Events).
        PodSecurityWarning,
        // Which release works it (Events).
        ClaimedElsewhere,
        ClaimTaken,
    }
}

impl Reason {
    /// The reasons a loop can fail for.
    pub const FAILURES: [Reason; 4] = [Reason::JobFailed, Reason::DeadlineExceeded, Reason::JobRejected, Reason::JobDeleted];

    /// A recorded failure reason as the enum; one not known (an edited status) is a `JobFailed`.
    pub fn failure(s: &str) -> Reason {
        Self::FAILURES.into_iter().find(|r| r.as_str() == s).unwrap_or(Reason::JobFailed)
    }

    /// Whether Ready=False for this reason means a loop is held up by something outside the
    /// spec (a person has to act).
    pub fn is_obstacle(self) -> bool {
        matches!(self, Reason::JobNameTaken | Reason::LoopStuck | Reason::PodCreateFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_word_reads_back_as_itself_and_unknown_failures_are_job_failed() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
        for c in ConditionType::ALL {
            assert_eq!(ConditionType::parse(&c.to_string()), Some(*c));
        }
        assert_eq!(Reason::failure("DeadlineExceeded"), Reason::DeadlineExceeded);
        assert_eq!(Reason::failure("BackoffLimitExceeded"), Reason::JobFailed);
        assert_eq!(condition_status(true), "True");
    }
}
