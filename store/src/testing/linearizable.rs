//! A linearizability checker for histories recorded by concurrent clients (Wing and Gong's
//! search, with Lowe's memo of visited states): is there one order of the calls, consistent
//! with real time (a call that returned before another was invoked comes first), in which each
//! call's result is what the sequential model gives?
//!
//! A call whose outcome is unknown (a timeout, a 503 after the request was sent) may have taken
//! effect at any point after its invocation, or never: the search tries both.

use std::collections::HashSet;
use std::hash::Hash;

/// The sequential specification of one object (a key).
pub trait Model: Clone + Eq + Hash {
    type Op;
    type Ret: PartialEq;
    /// The state after `op` if it can return `ret` from `self`; `ret` is `None` when the
    /// outcome is unknown (any return is acceptable).
    fn step(&self, op: &Self::Op, ret: Option<&Self::Ret>) -> Option<Self>;
}

#[derive(Debug, Clone)]
pub struct Call<Op, Ret> {
    pub op: Op,
    /// `None`: the outcome is unknown.
    pub ret: Option<Ret>,
    /// Nanoseconds on one monotonic clock shared by all clients.
    pub invoked: u64,
    /// `None` with an unknown outcome: it may take effect arbitrarily late.
    pub returned: Option<u64>,
}

/// `Ok(())` if the history is linearizable, else the calls no order could explain.
pub fn check<M: Model>(init: &M, calls: &[Call<M::Op, M::Ret>]) -> Result<(), String>
where
    M::Op: std::fmt::Debug,
    M::Ret: std::fmt::Debug,
{
    let n = calls.len();
    let mut done = vec![false; n];
    let mut seen: HashSet<(Vec<bool>, M)> = HashSet::new();
    if search(init, calls, &mut done, &mut seen) {
        Ok(())
    } else {
        Err(format!(
            "no linearization of {n} calls exists: {:#?}",
            calls
                .iter()
                .map(|c| (&c.op, &c.ret, c.invoked, c.returned))
                .collect::<Vec<_>>()
        ))
    }
}

fn search<M: Model>(
    state: &M,
    calls: &[Call<M::Op, M::Ret>],
    done: &mut Vec<bool>,
    seen: &mut HashSet<(Vec<bool>, M)>,
) -> bool {
    // Finished when every call with a known outcome is placed; unknown ones may never happen.
    if calls
        .iter()
        .zip(done.iter())
        .all(|(c, d)| *d || c.ret.is_none())
    {
        return true;
    }
    if !seen.insert((done.clone(), state.clone())) {
        return false;
    }
    // A call can go next if no pending call returned before it was invoked.
    let earliest_return = calls
        .iter()
        .zip(done.iter())
        .filter(|(_, d)| !**d)
        .filter_map(|(c, _)| c.returned)
        .min()
        .unwrap_or(u64::MAX);
    for i in 0..calls.len() {
        if done[i] || calls[i].invoked > earliest_return {
            continue;
        }
        let call = &calls[i];
        done[i] = true;
        if let Some(next) = state.step(&call.op, call.ret.as_ref())
            && search(&next, calls, done, seen)
        {
            return true;
        }
        // An unknown outcome may also never have taken effect.
        if call.ret.is_none() && search(state, calls, done, seen) {
            return true;
        }
        done[i] = false;
    }
    false
}

/// A register read and written whole: the model for resources written through the API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Register(pub Option<String>);

#[derive(Debug, Clone)]
pub enum RegisterOp {
    Write(String),
    Read,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RegisterRet {
    Written,
    Read(Option<String>),
}

impl Model for Register {
    type Op = RegisterOp;
    type Ret = RegisterRet;

    fn step(&self, op: &RegisterOp, ret: Option<&RegisterRet>) -> Option<Register> {
        match (op, ret) {
            (RegisterOp::Write(v), None | Some(RegisterRet::Written)) => {
                Some(Register(Some(v.clone())))
            }
            (RegisterOp::Read, None) => Some(self.clone()),
            (RegisterOp::Read, Some(RegisterRet::Read(v))) if *v == self.0 => Some(self.clone()),
            _ => None,
        }
    }
}

/// A versioned value updated by compare-and-set on its version: the store's own contract.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Versioned {
    pub version: u64,
    pub value: String,
}

#[derive(Debug, Clone)]
pub enum CasOp {
    Read,
    /// Update if the stored version is still `expected`.
    Cas {
        expected: u64,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum CasRet {
    Read { version: u64, value: String },
    Updated { version: u64 },
    Conflict,
}

impl Model for Versioned {
    type Op = CasOp;
    type Ret = CasRet;

    fn step(&self, op: &CasOp, ret: Option<&CasRet>) -> Option<Versioned> {
        match (op, ret) {
            (CasOp::Read, None) => Some(self.clone()),
            (CasOp::Read, Some(CasRet::Read { version, value })) => {
                (*version == self.version && *value == self.value).then(|| self.clone())
            }
            (CasOp::Cas { expected, value }, ret) => {
                let applies = *expected == self.version;
                let next = Versioned {
                    version: self.version + 1,
                    value: value.clone(),
                };
                match ret {
                    None if applies => Some(next),
                    None => Some(self.clone()),
                    Some(CasRet::Updated { version }) if applies && *version == next.version => {
                        Some(next)
                    }
                    Some(CasRet::Conflict) if !applies => Some(self.clone()),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(
        op: RegisterOp,
        ret: Option<RegisterRet>,
        invoked: u64,
        returned: u64,
    ) -> Call<RegisterOp, RegisterRet> {
        Call {
            op,
            ret,
            invoked,
            returned: Some(returned),
        }
    }

    #[test]
    fn overlapping_calls_may_go_either_way() {
        let h = [
            call(
                RegisterOp::Write("a".into()),
                Some(RegisterRet::Written),
                0,
                10,
            ),
            call(RegisterOp::Read, Some(RegisterRet::Read(None)), 1, 5),
            call(
                RegisterOp::Read,
                Some(RegisterRet::Read(Some("a".into()))),
                6,
                8,
            ),
        ];
        assert!(check(&Register(None), &h).is_ok());
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let h = [
            call(
                RegisterOp::Write("a".into()),
                Some(RegisterRet::Written),
                0,
                10,
            ),
            call(RegisterOp::Read, Some(RegisterRet::Read(None)), 11, 12),
        ];
        assert!(check(&Register(None), &h).is_err());
    }

    #[test]
    fn an_unknown_write_may_or_may_not_have_happened() {
        let unknown = Call {
            op: RegisterOp::Write("x".into()),
            ret: None,
            invoked: 0,
            returned: None,
        };
        let seen = [
            unknown.clone(),
            call(
                RegisterOp::Read,
                Some(RegisterRet::Read(Some("x".into()))),
                50,
                60,
            ),
        ];
        assert!(check(&Register(None), &seen).is_ok());
        let unseen = [
            unknown,
            call(RegisterOp::Read, Some(RegisterRet::Read(None)), 50, 60),
        ];
        assert!(check(&Register(None), &unseen).is_ok());
    }

    #[test]
    fn two_cas_winners_on_one_version_are_caught() {
        let init = Versioned {
            version: 1,
            value: "a".into(),
        };
        let cas = |v: &str, invoked, returned| Call {
            op: CasOp::Cas {
                expected: 1,
                value: v.into(),
            },
            ret: Some(CasRet::Updated { version: 2 }),
            invoked,
            returned: Some(returned),
        };
        assert!(check(&init, &[cas("b", 0, 10), cas("c", 1, 11)]).is_err());
        let lost = Call {
            op: CasOp::Cas {
                expected: 1,
                value: "c".into(),
            },
            ret: Some(CasRet::Conflict),
            invoked: 1,
            returned: Some(11),
        };
        assert!(check(&init, &[cas("b", 0, 10), lost]).is_ok());
    }
}
