// SPDX-License-Identifier: Apache-2.0
//! What one thread's decoder keeps from one body to the next: the start-tag memo (tagmemo.rs) and
//! the buffers values and texts are read into.
//!
//! Reused, the buffers cost one allocation per thread instead of a few per body; a small body (one
//! VM's change) then allocates next to nothing, and no large request per body makes malloc sort
//! its free lists again. Memory stays bounded: after a body, a buffer that grew past
//! [`KEEP_BYTES`] (one huge value) is given back.

use crate::tagmemo::TagMemo;
use crate::value::ValueEncoder;
use std::cell::RefCell;

/// Capacity a buffer may keep from one body to the next.
pub const KEEP_BYTES: usize = 256 * 1024;

/// The buffers a body is decoded with. Their contents never carry over: each use clears them.
#[derive(Debug, Default)]
pub struct Buffers {
    pub enc: ValueEncoder,
    pub text: Vec<u8>,
    pub refbuf: Vec<u8>,
}

/// Give `v` back (empty, no capacity) when it holds more than `keep` bytes.
pub fn give_back<T>(v: &mut Vec<T>, keep: usize) {
    if v.capacity() * std::mem::size_of::<T>() > keep {
        *v = Vec::new();
    }
}

impl Buffers {
    /// Give back what grew past `keep` bytes.
    pub fn trim(&mut self, keep: usize) {
        self.enc.trim(keep);
        give_back(&mut self.text, keep);
        give_back(&mut self.refbuf, keep);
    }

    /// Bytes held.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.enc.capacity() + self.text.capacity() + self.refbuf.capacity()
    }
}

#[derive(Debug, Default)]
pub struct Workspace {
    pub memo: TagMemo,
    pub bufs: Buffers,
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// Run `f` with this thread's workspace (a fresh one if it is in use already).
pub fn with<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    WORKSPACE.with(|w| match w.try_borrow_mut() {
        Ok(mut ws) => {
            let r = f(&mut ws);
            ws.bufs.trim(KEEP_BYTES);
            r
        }
        Err(_) => f(&mut Workspace::default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode, DecodeOptions, Decoded};
    use crate::filter::{Filter, DEFAULT_NAME_KEY};

    fn body(value: &str) -> Vec<u8> {
        format!(
            r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><WaitForUpdatesExResponse xmlns="urn:vim25"><returnval><version>1</version><filterSet><filter type="PropertyFilter">f</filter><objectSet><kind>modify</kind><obj type="VirtualMachine">vm-1</obj><changeSet><name>config.annotation</name><op>assign</op><val xsi:type="xsd:string">{value}</val></changeSet></objectSet></filterSet></returnval></WaitForUpdatesExResponse></soapenv:Body></soapenv:Envelope>"#
        )
        .into_bytes()
    }

    fn fp(b: &[u8]) -> u64 {
        let f = Filter::new(None::<Vec<String>>, DEFAULT_NAME_KEY);
        match decode(b, &f, DecodeOptions { kept_keys: false }).unwrap() {
            Decoded::Update(u) => u.objects[0].changes[0].fp.unwrap(),
            Decoded::Fault(f) => panic!("{f:?}"),
        }
    }

    fn held() -> usize {
        WORKSPACE.with(|w| w.borrow().bufs.capacity())
    }

    #[test]
    fn buffers_are_kept_between_bodies_and_a_huge_one_is_given_back() {
        let small = body("a &amp; b");
        let first = fp(&small);
        let kept = held();
        assert!(kept > 0, "the buffers stay with the thread");
        assert_eq!(fp(&small), first, "what a buffer held never carries over");
        assert_eq!(held(), kept, "no new allocation for the same body");
        let huge = body(&"x&amp;".repeat(KEEP_BYTES));
        let huge_fp = fp(&huge);
        assert!(held() <= 3 * KEEP_BYTES, "held {} after a huge value", held());
        assert_ne!(huge_fp, first);
        assert_eq!(fp(&small), first);
        assert_eq!(fp(&huge), huge_fp);
    }
}
