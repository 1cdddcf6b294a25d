// SPDX-License-Identifier: Apache-2.0
//! Structure-aware fuzzing of the decoder: the fuzzer's bytes build a typed WaitForUpdatesEx tree
//! (objectSets, changeSets with every op, typed values: ArrayOfOptionValue, devices, nested data
//! objects, MoRefs, xsi:nil, unknown types, missingSets), which is rendered twice with different
//! surface syntax (namespace prefixes, where xsi is declared, quotes, entities, character
//! references, CDATA, comments, `<a/>` vs `<a></a>`, whitespace, BOM, XML declaration).
//!
//! Invariants: the decoder never panics; both renderings decode to exactly the generated objects,
//! kinds, paths, missingSets, names and kept extraConfig keys, with the null fingerprint exactly
//! where the value is absent, nil or removed; the two renderings decode identically (fingerprints
//! included: the surface never changes a fingerprint). Optionally one hostile edit (truncation,
//! undefined entity, DTD, deep nesting, NUL, invalid UTF-8, processing instruction) is applied,
//! and then the result must be the matching typed error at the right offset.
#![no_main]

use _vmwatch::batch::{Decider, DeciderConfig};
use _vmwatch::decode::{decode, DecodeOptions, Decoded, UpdateSet, KIND_ENTER, KIND_LEAVE, KIND_MODIFY};
use _vmwatch::errors::VmwatchError;
use _vmwatch::filter::{
    keyed_extra_config_key, parse_namespaced_name, Filter, DEFAULT_NAME_KEY, DEVICE_PATH, EXTRA_CONFIG_PATH,
};
use _vmwatch::index::Index;
use _vmwatch::value::NULL_FP;
use libfuzzer_sys::arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const IGNORED: &[&str] = &["ign", DEFAULT_NAME_KEY];
const MAX_VAL_DEPTH: usize = 6;

/// A type name: no colon (a QName has at most one, and the renderer may add an `xsd:` prefix).
fn ty(u: &mut Unstructured<'_>, pool: &[&str]) -> Result<String> {
    Ok(text(u, pool)?.replace(':', "_"))
}

/// Short strings from a pool (so that keys and names collide) or arbitrary text (never NUL).
fn text(u: &mut Unstructured<'_>, pool: &[&str]) -> Result<String> {
    if u.ratio(3, 4)? {
        return Ok((*u.choose(pool)?).to_owned());
    }
    let s: String = u.arbitrary()?;
    Ok(s.chars().take(40).map(|c| if c == '\0' { '0' } else { c }).collect())
}

fn list<T>(
    u: &mut Unstructured<'_>,
    max: usize,
    mut f: impl FnMut(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| f(u)).collect()
}

#[derive(Debug)]
struct Doc {
    /// `None`: no `<returnval>` at all (a heartbeat).
    version: Option<String>,
    truncated: Option<bool>,
    filters: Vec<Vec<Item>>,
}

#[derive(Debug)]
enum Item {
    Obj(Obj),
    Missing { moref: String, fault: String },
}

#[derive(Debug)]
struct Obj {
    moref: String,
    obj_type: String,
    kind: u8,
    changes: Vec<Chg>,
    missing: Vec<(String, String)>,
}

#[derive(Debug)]
struct Chg {
    path: String,
    op: &'static str,
    val: Option<Val>,
}

#[derive(Debug)]
struct Opt {
    key: String,
    vtype: String,
    value: String,
}

#[derive(Debug)]
enum Val {
    Nil(String),
    Text {
        ty: String,
        text: String,
    },
    MoRef {
        ty: String,
        value: String,
    },
    /// `ArrayOfOptionValue`.
    Options(Vec<Opt>),
    /// A single `OptionValue` (keyed extraConfig paths).
    Option1(Opt),
    Devices(Vec<(String, String, String)>),
    /// A data object of any (possibly unknown) type with named fields.
    Data {
        ty: String,
        fields: Vec<(String, Val)>,
    },
}

const PATHS: &[&str] = &[
    EXTRA_CONFIG_PATH,
    DEVICE_PATH,
    "summary.runtime.powerState",
    "config.extraConfig[\"a\"]",
    "config.extraConfig[\"ign\"]",
    "config.extraConfig[\"vmservice.namespacedName\"]",
    "snapshot",
];
const KEYS: &[&str] = &["a", "b", "ign", DEFAULT_NAME_KEY, "guestinfo.userdata", ""];
const VALUES: &[&str] = &[
    "ns/name", "ns/other", "x", "", "a/b/c", "/x", "<&>\"'", "]]>", " ns/name",
];
const TYPES: &[&str] = &["string", "int", "boolean", "", "Unknown_Type", "long"];
const MOREFS: &[&str] = &["vm-1", "vm-2", "vm-10", "group-v3"];

impl Val {
    fn gen(u: &mut Unstructured<'_>, path: &str, depth: usize) -> Result<Val> {
        // the usual shape for the path most of the time, anything otherwise
        let usual = if path == EXTRA_CONFIG_PATH {
            5
        } else if path == DEVICE_PATH {
            6
        } else if keyed_extra_config_key(path).is_some() {
            4
        } else {
            1
        };
        let pick = if u.ratio(2, 3)? { usual } else { u.int_in_range(0..=6)? };
        Ok(match pick {
            0 => Val::Nil(ty(u, TYPES)?),
            2 => Val::MoRef {
                ty: text(u, &["VirtualMachine", "Folder"])?,
                value: text(u, MOREFS)?,
            },
            3 if depth < MAX_VAL_DEPTH => Val::Data {
                ty: ty(u, &["VirtualMachineSnapshotTree", "Description", "Unknown"])?,
                fields: list(u, 4, |u| {
                    let name = text(u, &["name", "childSnapshotList", "key", "value", "label"])?;
                    let name = if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                        "f".to_owned()
                    } else {
                        name
                    };
                    Ok((name, Val::gen(u, "", depth + 1)?))
                })?,
            },
            4 => Val::Option1(Opt::gen(u)?),
            5 => Val::Options(list(u, 6, Opt::gen)?),
            6 => Val::Devices(list(u, 4, |u| {
                Ok((
                    ty(u, &["VirtualDisk", "VirtualE1000"])?,
                    text(u, &["100", "20", "3", "x"])?,
                    text(u, VALUES)?,
                ))
            })?),
            _ => Val::Text {
                ty: ty(u, TYPES)?,
                text: text(u, &["poweredOn", "poweredOff", "", " ", "42"])?,
            },
        })
    }
}

impl Opt {
    fn gen(u: &mut Unstructured<'_>) -> Result<Opt> {
        Ok(Opt {
            key: text(u, KEYS)?,
            vtype: ty(u, TYPES)?,
            value: text(u, VALUES)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Doc {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let version = if u.ratio(1, 10)? {
            None
        } else {
            Some(text(u, &["1", "-", "2_3"])?)
        };
        let truncated = if u.arbitrary()? { Some(u.arbitrary()?) } else { None };
        let filters = if version.is_none() {
            Vec::new()
        } else {
            list(u, 2, |u| {
                list(u, 5, |u| {
                    Ok(if u.ratio(1, 8)? {
                        Item::Missing {
                            moref: text(u, MOREFS)?,
                            fault: ty(u, &["ManagedObjectNotFound", "NoPermission"])?,
                        }
                    } else {
                        let mut moref = text(u, MOREFS)?;
                        if moref.is_empty() {
                            moref.push('v');
                        }
                        Item::Obj(Obj {
                            moref,
                            obj_type: text(u, &["VirtualMachine", "Folder", ""])?,
                            kind: *u.choose(&[KIND_ENTER, KIND_MODIFY, KIND_LEAVE])?,
                            changes: list(u, 4, |u| {
                                let path = text(u, PATHS)?;
                                let op = *u.choose(&["add", "remove", "assign", "indirectRemove"])?;
                                let val = if u.ratio(1, 8)? {
                                    None
                                } else {
                                    Some(Val::gen(u, &path, 0)?)
                                };
                                Ok(Chg { path, op, val })
                            })?,
                            missing: list(u, 2, |u| Ok((text(u, PATHS)?, ty(u, &["NoPermission", "Other"])?)))?,
                        })
                    })
                })
            })?
        };
        Ok(Doc {
            version,
            truncated,
            filters,
        })
    }
}

/// How the same tree is spelled.
#[derive(Debug)]
struct Surface {
    soap: &'static str,
    xsi: &'static str,
    /// 0: declared on the Envelope, 1: on every `<val>` (vcsim), 2: never (the `xsi` fallback).
    xsi_where: u8,
    /// Prefix of the vim25 elements (`None`: default namespace).
    vim: Option<&'static str>,
    type_prefix: bool,
    quote: char,
    text_mode: u8,
    comments: bool,
    self_close: bool,
    ws: bool,
    decl: bool,
    bom: bool,
}

impl<'a> Arbitrary<'a> for Surface {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let xsi_where = u.int_in_range(0..=2)?;
        Ok(Surface {
            soap: u.choose(&["soapenv", "S", "env", "a-b.c"])?,
            xsi: if xsi_where == 2 {
                "xsi"
            } else {
                u.choose(&["xsi", "_XMLSchema-instance", "i", "p0"])?
            },
            xsi_where,
            vim: if u.arbitrary()? {
                Some(u.choose(&["vim25", "v", "x_1"])?)
            } else {
                None
            },
            type_prefix: u.arbitrary()?,
            quote: if u.arbitrary()? { '"' } else { '\'' },
            text_mode: u.arbitrary()?,
            comments: u.arbitrary()?,
            self_close: u.arbitrary()?,
            ws: u.arbitrary()?,
            decl: u.arbitrary()?,
            bom: u.arbitrary()?,
        })
    }
}

#[derive(Debug)]
enum Hostile {
    Truncate(u32),
    UndefinedEntity,
    Doctype,
    Deep(u16),
    Nul(u32),
    BadUtf8(u32),
    Pi,
}

impl<'a> Arbitrary<'a> for Hostile {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0..=6)? {
            0 => Hostile::Truncate(u.arbitrary()?),
            1 => Hostile::UndefinedEntity,
            2 => Hostile::Doctype,
            3 => Hostile::Deep(u.arbitrary()?),
            4 => Hostile::Nul(u.arbitrary()?),
            5 => Hostile::BadUtf8(u.arbitrary()?),
            _ => Hostile::Pi,
        })
    }
}

#[derive(Debug)]
struct Input {
    doc: Doc,
    a: Surface,
    b: Surface,
    hostile: Option<Hostile>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Input {
            a: u.arbitrary()?,
            b: u.arbitrary()?,
            hostile: if u.ratio(1, 4)? { Some(u.arbitrary()?) } else { None },
            doc: u.arbitrary()?,
        })
    }
}

struct W<'s> {
    s: &'s Surface,
    out: String,
    n: usize,
}

impl W<'_> {
    fn vim(&self, local: &str) -> String {
        match self.s.vim {
            Some(p) => format!("{p}:{local}"),
            None => local.to_owned(),
        }
    }

    fn ws(&mut self) {
        if self.s.ws {
            self.out.push_str("\n  ");
        }
    }

    fn attr(&mut self, key: &str, value: &str) {
        let q = self.s.quote;
        let v = value
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace(q, if q == '"' { "&quot;" } else { "&apos;" });
        self.out.push_str(&format!(" {key}={q}{v}{q}"));
    }

    fn type_attr(&mut self, ty: &str) {
        if ty.is_empty() {
            return;
        }
        let v = if self.s.type_prefix {
            format!("xsd:{ty}")
        } else {
            ty.to_owned()
        };
        let key = format!("{}:type", self.s.xsi);
        self.attr(&key, &v);
    }

    /// Character data, spelled in one of several equivalent ways.
    fn text(&mut self, t: &str) {
        self.n += 1;
        let mode = (self.s.text_mode as usize + self.n) % 5;
        let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        match mode {
            1 => {
                for c in t.chars() {
                    self.out.push_str(&format!("&#{};", c as u32));
                }
            }
            2 if !t.contains("]]>") && !t.is_empty() => self.out.push_str(&format!("<![CDATA[{t}]]>")),
            3 => {
                let mid = t.char_indices().nth(t.chars().count() / 2).map_or(t.len(), |(i, _)| i);
                let (a, b) = t.split_at(mid);
                self.out.push_str(&esc(a));
                if self.s.comments {
                    self.out.push_str("<!-- c -->");
                }
                if !b.contains("]]>") && !b.is_empty() {
                    self.out.push_str(&format!("<![CDATA[{b}]]>"));
                } else {
                    for c in b.chars() {
                        self.out.push_str(&format!("&#x{:x};", c as u32));
                    }
                }
            }
            _ => self.out.push_str(&esc(t)),
        }
    }

    /// `<name attrs>text</name>` (or `<name attrs/>` when empty and the surface says so).
    fn leaf(&mut self, name: &str, attrs: &[(&str, &str)], t: &str) {
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.attr(k, v);
        }
        if t.is_empty() && self.s.self_close {
            self.out.push_str("/>");
            return;
        }
        self.out.push('>');
        self.text(t);
        self.out.push_str(&format!("</{name}>"));
    }

    fn open(&mut self, name: &str) {
        self.out.push_str(&format!("<{name}>"));
    }

    fn close(&mut self, name: &str) {
        self.ws();
        self.out.push_str(&format!("</{name}>"));
    }

    /// Close a value element: whitespace before the end tag only when it has children (in a
    /// childless element, whitespace is its text).
    fn close_value(&mut self, name: &str, children: bool) {
        if children {
            self.ws();
        }
        self.out.push_str(&format!("</{name}>"));
    }

    fn value(&mut self, name: &str, v: &Val, top: bool) {
        self.ws();
        let xsi_decl = top && self.s.xsi_where == 1;
        let start = |w: &mut W<'_>| {
            w.out.push('<');
            w.out.push_str(name);
            if xsi_decl {
                let key = format!("xmlns:{}", w.s.xsi);
                w.attr(&key, XSI);
            }
        };
        start(self);
        match v {
            Val::Nil(ty) => {
                self.type_attr(ty);
                let key = format!("{}:nil", self.s.xsi);
                self.attr(&key, "true");
                self.out.push_str("/>");
            }
            Val::Text { ty, text } => {
                self.type_attr(ty);
                if text.is_empty() && self.s.self_close {
                    self.out.push_str("/>");
                } else {
                    self.out.push('>');
                    self.text(text);
                    self.out.push_str(&format!("</{name}>"));
                }
            }
            Val::MoRef { ty, value } => {
                self.type_attr("ManagedObjectReference");
                self.attr("type", ty);
                self.out.push('>');
                self.text(value);
                self.out.push_str(&format!("</{name}>"));
            }
            Val::Option1(o) => {
                self.type_attr("OptionValue");
                self.out.push('>');
                self.option_body(o);
                self.close(name);
            }
            Val::Options(opts) => {
                self.type_attr("ArrayOfOptionValue");
                self.out.push('>');
                for o in opts {
                    self.ws();
                    self.out.push('<');
                    self.out.push_str("OptionValue");
                    self.type_attr("OptionValue");
                    self.out.push('>');
                    self.option_body(o);
                    self.close("OptionValue");
                }
                self.close_value(name, !opts.is_empty());
            }
            Val::Devices(devs) => {
                self.type_attr("ArrayOfVirtualDevice");
                self.out.push('>');
                for (ty, key, label) in devs {
                    self.ws();
                    self.out.push_str("<VirtualDevice");
                    self.type_attr(ty);
                    self.out.push('>');
                    self.leaf("key", &[], key);
                    self.out.push_str("<deviceInfo");
                    self.type_attr("Description");
                    self.out.push('>');
                    self.leaf("label", &[], label);
                    self.out.push_str("</deviceInfo>");
                    self.close("VirtualDevice");
                }
                self.close_value(name, !devs.is_empty());
            }
            Val::Data { ty, fields } => {
                self.type_attr(ty);
                self.out.push('>');
                for (f, v) in fields {
                    self.value(f, v, false);
                }
                self.close_value(name, !fields.is_empty());
            }
        }
    }

    fn option_body(&mut self, o: &Opt) {
        self.ws();
        self.leaf("key", &[], &o.key);
        self.ws();
        self.out.push_str("<value");
        self.type_attr(&o.vtype);
        if o.value.is_empty() && self.s.self_close {
            self.out.push_str("/>");
        } else {
            self.out.push('>');
            self.text(&o.value);
            self.out.push_str("</value>");
        }
    }

    fn fault(&mut self, t: &str) {
        self.open(&self.vim("fault"));
        self.out.push_str("<fault");
        if self.s.xsi_where == 1 {
            // declared where it is used, as for values
            let key = format!("xmlns:{}", self.s.xsi);
            self.attr(&key, XSI);
        }
        self.type_attr(t);
        self.out.push_str("/>");
        self.leaf(&self.vim("localizedMessage"), &[], "msg");
        self.close(&self.vim("fault"));
    }

    fn render(mut self, d: &Doc) -> Vec<u8> {
        let s = self.s;
        if s.decl {
            self.out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        }
        let env = format!("{}:Envelope", s.soap);
        self.out.push_str(&format!("<{env}"));
        self.attr(
            &format!("xmlns:{}", s.soap),
            "http://schemas.xmlsoap.org/soap/envelope/",
        );
        if s.xsi_where == 0 {
            self.attr(&format!("xmlns:{}", s.xsi), XSI);
        }
        self.out.push('>');
        self.ws();
        let body = format!("{}:Body", s.soap);
        self.open(&body);
        let resp = self.vim("WaitForUpdatesExResponse");
        self.out.push_str(&format!("<{resp}"));
        match s.vim {
            Some(p) => self.attr(&format!("xmlns:{p}"), "urn:vim25"),
            None => self.attr("xmlns", "urn:vim25"),
        }
        self.out.push('>');
        if let Some(version) = &d.version {
            let rv = self.vim("returnval");
            self.ws();
            self.open(&rv);
            self.ws();
            self.leaf(&self.vim("version"), &[], version);
            if let Some(t) = d.truncated {
                self.ws();
                self.leaf(&self.vim("truncated"), &[], if t { "true" } else { "false" });
            }
            for f in &d.filters {
                let fs = self.vim("filterSet");
                self.ws();
                self.open(&fs);
                for item in f {
                    self.ws();
                    match item {
                        Item::Missing { moref, fault } => {
                            let ms = self.vim("missingSet");
                            self.open(&ms);
                            self.leaf(&self.vim("obj"), &[("type", "VirtualMachine")], moref);
                            self.fault(fault);
                            self.close(&ms);
                        }
                        Item::Obj(o) => {
                            let os = self.vim("objectSet");
                            self.open(&os);
                            self.ws();
                            let kind = ["enter", "modify", "leave"][o.kind as usize];
                            self.leaf(&self.vim("kind"), &[], kind);
                            self.ws();
                            if o.obj_type.is_empty() {
                                self.leaf(&self.vim("obj"), &[], &o.moref);
                            } else {
                                self.leaf(&self.vim("obj"), &[("type", &o.obj_type)], &o.moref);
                            }
                            for c in &o.changes {
                                let cs = self.vim("changeSet");
                                self.ws();
                                self.open(&cs);
                                self.leaf(&self.vim("name"), &[], &c.path);
                                self.leaf(&self.vim("op"), &[], c.op);
                                if let Some(v) = &c.val {
                                    self.value(&self.vim("val"), v, true);
                                }
                                self.close(&cs);
                            }
                            for (path, fault) in &o.missing {
                                let ms = self.vim("missingSet");
                                self.ws();
                                self.open(&ms);
                                self.leaf(&self.vim("path"), &[], path);
                                self.fault(fault);
                                self.close(&ms);
                            }
                            self.close(&os);
                        }
                    }
                }
                self.close(&fs);
            }
            self.close(&rv);
        }
        self.close(&resp);
        self.close(&body);
        self.close(&env);
        let mut out = Vec::with_capacity(self.out.len() + 3);
        if s.bom {
            out.extend_from_slice(b"\xEF\xBB\xBF");
        }
        out.extend_from_slice(self.out.as_bytes());
        out
    }
}

fn render(d: &Doc, s: &Surface) -> Vec<u8> {
    W {
        s,
        out: String::new(),
        n: 0,
    }
    .render(d)
}

fn filter() -> Filter {
    Filter::new(Some(IGNORED), DEFAULT_NAME_KEY)
}

fn run(body: &[u8]) -> std::result::Result<UpdateSet, Box<_vmwatch::errors::DecodeErrorInfo>> {
    match decode(body, &filter(), DecodeOptions { kept_keys: true }) {
        Ok(Decoded::Update(u)) => Ok(u),
        Ok(Decoded::Fault(f)) => panic!("a generated response decoded as a fault: {f:?}"),
        Err(VmwatchError::Decode(e)) => {
            assert!(e.offset as usize <= body.len(), "offset past the end: {e:?}");
            Err(e)
        }
        Err(other) => panic!("not a decode error: {other:?}"),
    }
}

/// The name and sorted kept keys an `ArrayOfOptionValue` yields (value.rs semantics).
fn expected_extra_config(opts: &[Opt]) -> (Option<(String, String)>, Vec<String>) {
    let string = |t: &str| t.is_empty() || t == "string";
    let name = opts
        .iter()
        .filter(|o| o.key == DEFAULT_NAME_KEY && string(&o.vtype))
        .find_map(|o| parse_namespaced_name(&o.value))
        // no Kubernetes object has a longer namespace or name: the decoder drops it (decode.rs kube_name)
        .filter(|(a, b)| a.len() <= 63 && b.len() <= 253)
        .map(|(a, b)| (a.to_owned(), b.to_owned()));
    let mut keys: Vec<String> = opts
        .iter()
        .filter(|o| !IGNORED.contains(&o.key.as_str()))
        .map(|o| o.key.clone())
        .collect();
    keys.sort();
    keys.dedup();
    (name, keys)
}

fn check_model(d: &Doc, got: &UpdateSet) {
    assert_eq!(got.version, d.version);
    assert_eq!(got.truncated, d.version.is_some() && d.truncated == Some(true));
    let objs: Vec<&Obj> = d
        .filters
        .iter()
        .flatten()
        .filter_map(|i| if let Item::Obj(o) = i { Some(o) } else { None })
        .collect();
    assert_eq!(got.objects.len(), objs.len());
    let mut missing = Vec::new();
    for item in d.filters.iter().flatten() {
        match item {
            Item::Missing { moref, fault } => missing.push((moref.clone(), String::new(), fault.clone())),
            Item::Obj(o) => {
                for (p, f) in &o.missing {
                    missing.push((o.moref.clone(), p.clone(), f.clone()));
                }
            }
        }
    }
    assert_eq!(got.missing, missing);
    for (o, g) in objs.iter().zip(&got.objects) {
        assert_eq!((&g.moref, &g.obj_type, g.kind), (&o.moref, &o.obj_type, o.kind));
        assert_eq!(g.changes.len(), o.changes.len());
        for (c, gc) in o.changes.iter().zip(&g.changes) {
            assert_eq!(&*gc.path, c.path.as_str());
            let null = matches!(c.op, "remove" | "indirectRemove") || matches!(c.val, None | Some(Val::Nil(_)));
            if let Some(key) = keyed_extra_config_key(&c.path) {
                let ignored = IGNORED.contains(&key);
                assert_eq!(gc.fp.is_none(), ignored, "{c:?}");
                assert_eq!(gc.kept_keys, Some(if ignored { vec![] } else { vec![key.to_owned()] }));
                if key == DEFAULT_NAME_KEY {
                    let want = match (&c.val, null) {
                        (Some(Val::Option1(o)), false) => expected_extra_config(std::slice::from_ref(o)).0,
                        _ => None,
                    };
                    if matches!(c.val, Some(Val::Option1(_))) || null {
                        assert_eq!(gc.name, Some(want), "{c:?}");
                    }
                } else {
                    assert_eq!(gc.name, None);
                }
            } else if c.path == EXTRA_CONFIG_PATH {
                if null {
                    assert_eq!(
                        (gc.fp, &gc.name, &gc.kept_keys),
                        (Some(NULL_FP), &Some(None), &Some(vec![]))
                    );
                } else if let Some(Val::Options(opts)) = &c.val {
                    let (name, keys) = expected_extra_config(opts);
                    assert_eq!(gc.name, Some(name), "{c:?}");
                    assert_eq!(gc.kept_keys, Some(keys), "{c:?}");
                }
            } else {
                assert_eq!((&gc.name, &gc.kept_keys), (&None, &None));
            }
            if let Some(fp) = gc.fp {
                assert_eq!(fp == NULL_FP, null, "{c:?}");
            }
        }
    }
}

fn insert(body: &[u8], at: usize, what: &[u8]) -> Vec<u8> {
    let mut b = body[..at].to_vec();
    b.extend_from_slice(what);
    b.extend_from_slice(&body[at..]);
    b
}

fn find(body: &[u8], needle: &[u8]) -> Option<usize> {
    body.windows(needle.len()).position(|w| w == needle)
}

fn check_hostile(h: &Hostile, body: &[u8]) {
    let start = if body.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
    // after the Envelope's start tag: inside the document, before anything else
    let env = find(body, b":Envelope").expect("an Envelope");
    let inside = env + find(&body[env..], b">").expect("its start tag") + 1;
    let (bad, kind, at): (Vec<u8>, &[&str], Option<usize>) = match *h {
        Hostile::Truncate(n) => {
            let n = n as usize % body.len();
            (body[..n].to_vec(), &["xml_syntax", "not_soap", "not_utf8"], None)
        }
        // an element the decoder skips: entities are still checked there
        Hostile::UndefinedEntity => (
            insert(body, inside, b"<zz>&lol;</zz>"),
            &["unknown_entity"],
            Some(inside + 4),
        ),
        Hostile::Doctype => (
            insert(body, start, b"<!DOCTYPE x [<!ENTITY a \"&b;&b;\">]>"),
            &["dtd_forbidden"],
            Some(start),
        ),
        Hostile::Deep(n) => {
            let n = 257 + n as usize % 5000;
            let deep = format!("<zz>{}</zz>", "<a>".repeat(n) + &"</a>".repeat(n));
            (insert(body, inside, deep.as_bytes()), &["too_deep"], None)
        }
        Hostile::Nul(p) => {
            // inside a multi-byte character it is a UTF-8 error first
            let p = start + p as usize % (body.len() - start);
            (insert(body, p, b"\0"), &["invalid_char", "not_utf8"], Some(p))
        }
        Hostile::BadUtf8(p) => {
            let p = start + p as usize % (body.len() - start);
            (insert(body, p, b"\xFF"), &["not_utf8"], Some(p))
        }
        Hostile::Pi => (insert(body, inside, b"<?pi x?>"), &["pi_forbidden"], Some(inside)),
    };
    let e = run(&bad).expect_err("a hostile edit must be refused");
    assert!(
        kind.contains(&e.kind),
        "{h:?}: got {e:?}\n{}",
        String::from_utf8_lossy(&bad)
    );
    if let Some(at) = at {
        if e.kind == "not_utf8" {
            // at the start of the character the edit broke
            assert!(e.offset as usize <= at, "{h:?}: {e:?}");
        } else {
            assert_eq!(e.offset as usize, at, "{h:?}: {e:?}");
        }
    }
}

fuzz_target!(|input: Input| {
    let a = render(&input.doc, &input.a);
    let b = render(&input.doc, &input.b);
    let da = run(&a).unwrap_or_else(|e| panic!("rendering a refused: {e:?}\n{}", String::from_utf8_lossy(&a)));
    let db = run(&b).unwrap_or_else(|e| panic!("rendering b refused: {e:?}\n{}", String::from_utf8_lossy(&b)));
    check_model(&input.doc, &da);
    assert_eq!(
        da,
        db,
        "the surface changed the result\n{}\n{}",
        String::from_utf8_lossy(&a),
        String::from_utf8_lossy(&b)
    );
    if let Some(h) = &input.hostile {
        check_hostile(h, &a);
    }
    // and the decision on top never panics
    let mut d = Decider::new(DeciderConfig {
        watched_paths: PATHS.iter().map(|s| s.to_string()).collect(),
        filter: filter(),
        cache_max_entries: 8,
        cache_ttl_s: 60.0,
        signal_on_leave: true,
    })
    .unwrap();
    d.decide(&a, &Index::new()).unwrap();
});
