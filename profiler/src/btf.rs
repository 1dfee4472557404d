//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`, plus a
//! module's split BTF such as `/sys/kernel/btf/overlay` where overlayfs is
//! a module): struct member offsets, enum values and function type IDs.
//!
//! Rust eBPF has no CO-RE relocations, so the offsets the kernel programs
//! need are looked up here at load time and passed in as globals.

use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("BTF struct {0} has no member {1}")]
    NoMember(String, String),
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Member {
    name: u32,
    ty: u32,
    /// Bit offset within the struct.
    bit_offset: u32,
}

enum Type {
    Composite { members: Vec<Member> },
    Alias(u32),
    Other,
}

pub struct Btf {
    strings: Vec<u8>,
    /// Index = type ID (0 is void).
    types: Vec<(u32, Type)>,
    structs: HashMap<String, u32>,
    enum_values: HashMap<String, i64>,
    /// Function name -> type ID.
    funcs: HashMap<String, u32>,
    /// Where the split part begins, once a module's BTF is added: its type
    /// IDs and string offsets continue the base's.
    split_from: Option<(String, u32)>,
}

impl Btf {
    /// The running kernel's BTF, read once per process (it is megabytes,
    /// and loading probes consults it several times).
    pub fn kernel() -> Result<&'static Btf, &'static BtfError> {
        static KERNEL: std::sync::OnceLock<Result<Btf, BtfError>> = std::sync::OnceLock::new();
        KERNEL.get_or_init(Btf::from_sys_fs).as_ref()
    }

    /// vmlinux's BTF, plus overlay's split BTF where overlay is a module
    /// (its structs and functions are only there).
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        let mut btf = Btf::parse(&read(Path::new("/sys/kernel/btf/vmlinux"))?)?;
        let overlay = Path::new("/sys/kernel/btf/overlay");
        if overlay.exists() {
            btf.add_split("overlay", &read(overlay)?)?;
        }
        Ok(btf)
    }

    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let mut btf = Btf {
            strings: Vec::new(),
            types: vec![(0, Type::Other)],
            structs: HashMap::new(),
            enum_values: HashMap::new(),
            funcs: HashMap::new(),
            split_from: None,
        };
        btf.append(data)?;
        Ok(btf)
    }

    /// Adds module `name`'s split BTF, which numbers its types and strings
    /// on from this (base) BTF's.
    pub fn add_split(&mut self, name: &str, data: &[u8]) -> Result<(), BtfError> {
        if self.split_from.is_some() {
            return Err(BtfError::Malformed("only one split BTF at a time"));
        }
        self.split_from = Some((name.to_string(), self.types.len() as u32));
        self.append(data)
    }

    fn append(&mut self, data: &[u8]) -> Result<(), BtfError> {
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |o: usize| {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        };
        if u16_at(0) != Some(0xeb9f) {
            return Err(BtfError::Malformed("bad magic (or big-endian BTF)"));
        }
        let bad = BtfError::Malformed;
        let hdr_len = u32_at(4).ok_or(bad("short header"))? as usize;
        let type_off = u32_at(8).ok_or(bad("short header"))? as usize;
        let type_len = u32_at(12).ok_or(bad("short header"))? as usize;
        let str_off = u32_at(16).ok_or(bad("short header"))? as usize;
        let str_len = u32_at(20).ok_or(bad("short header"))? as usize;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(bad("string section out of range"))?;
        let btf = self;
        btf.strings.extend_from_slice(strings);
        let mut o = hdr_len + type_off;
        let end = o + type_len;
        while o < end {
            let name = u32_at(o).ok_or(bad("truncated type"))?;
            let info = u32_at(o + 4).ok_or(bad("truncated type"))?;
            let size_or_type = u32_at(o + 8).ok_or(bad("truncated type"))?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            o += 12;
            let id = btf.types.len() as u32;
            let ty = match kind {
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = o + i * 12;
                        let off = u32_at(m + 8).ok_or(bad("truncated member"))?;
                        members.push(Member {
                            name: u32_at(m).ok_or(bad("truncated member"))?,
                            ty: u32_at(m + 4).ok_or(bad("truncated member"))?,
                            bit_offset: if kind_flag { off & 0xff_ffff } else { off },
                        });
                    }
                    o += vlen * 12;
                    if kind == KIND_STRUCT && name != 0 {
                        btf.structs
                            .entry(btf.string(name).to_string())
                            .or_insert(id);
                    }
                    Type::Composite { members }
                }
                KIND_ENUM => {
                    for i in 0..vlen {
                        let m = o + i * 8;
                        let n = u32_at(m).ok_or(bad("truncated enum"))?;
                        let v = u32_at(m + 4).ok_or(bad("truncated enum"))? as i32 as i64;
                        btf.enum_values.insert(btf.string(n).to_string(), v);
                    }
                    o += vlen * 8;
                    Type::Other
                }
                KIND_ENUM64 => {
                    for i in 0..vlen {
                        let m = o + i * 12;
                        let n = u32_at(m).ok_or(bad("truncated enum64"))?;
                        let lo = u32_at(m + 4).ok_or(bad("truncated enum64"))? as u64;
                        let hi = u32_at(m + 8).ok_or(bad("truncated enum64"))? as u64;
                        btf.enum_values
                            .insert(btf.string(n).to_string(), (hi << 32 | lo) as i64);
                    }
                    o += vlen * 12;
                    Type::Other
                }
                KIND_INT | KIND_VAR | KIND_DECL_TAG => {
                    o += 4;
                    Type::Other
                }
                KIND_ARRAY => {
                    o += 12;
                    Type::Other
                }
                KIND_FUNC_PROTO => {
                    o += vlen * 8;
                    Type::Other
                }
                KIND_DATASEC => {
                    o += vlen * 12;
                    Type::Other
                }
                KIND_FUNC => {
                    btf.funcs.insert(btf.string(name).to_string(), id);
                    Type::Other
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias(size_or_type)
                }
                0..=19 => Type::Other,
                _ => return Err(bad("unknown BTF kind")),
            };
            btf.types.push((name, ty));
        }
        Ok(())
    }

    fn string(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous
    /// struct and union members as C does.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.into()))?;
        self.find_member(id, member)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember(name.into(), member.into()))
    }

    fn find_member(&self, id: u32, member: &str) -> Option<u32> {
        let Type::Composite { members } = &self.resolve(id)?.1 else {
            return None;
        };
        for m in members {
            if m.name != 0 && self.string(m.name) == member {
                return Some(m.bit_offset);
            }
            if m.name == 0 {
                if let Some(inner) = self.find_member(m.ty, member) {
                    return Some(m.bit_offset + inner);
                }
            }
        }
        None
    }

    fn resolve(&self, mut id: u32) -> Option<&(u32, Type)> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.1 {
                Type::Alias(next) => id = next,
                _ => return Some(t),
            }
        }
        None
    }

    pub fn enum_value(&self, name: &str) -> Option<i64> {
        self.enum_values.get(name).copied()
    }

    pub fn has_func(&self, name: &str) -> bool {
        self.funcs.contains_key(name)
    }

    /// A function's type ID, and the module whose split BTF holds it (None:
    /// vmlinux). fentry programs attach by this ID, in that BTF object.
    pub fn func_id(&self, name: &str) -> Option<(u32, Option<&str>)> {
        let id = *self.funcs.get(name)?;
        let module = match &self.split_from {
            Some((module, first)) if id >= *first => Some(module.as_str()),
            _ => None,
        };
        Some((id, module))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, BtfError> {
    std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: header, types, strings.
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let type_len = types.len() as u32 * 4;
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for v in [24, 0, type_len, type_len, strings.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        types
            .iter()
            .for_each(|t| b.extend_from_slice(&t.to_le_bytes()));
        b.extend_from_slice(strings);
        b
    }

    /// A module's split BTF numbers its types and strings on from the
    /// base's: its function gets the ID after the base's last type.
    #[test]
    fn split_btf_continues_the_base_numbering() {
        // Base: void (implicit) + INT "int".
        let mut btf = Btf::parse(&blob(&[1, KIND_INT << 24, 4, 32], b"\0int\0")).unwrap();
        assert_eq!(btf.func_id("my_fn"), None);
        // Split: FUNC "my_fn", its name at the base's string length (5).
        btf.add_split("mod", &blob(&[5, KIND_FUNC << 24, 1], b"my_fn\0"))
            .unwrap();
        assert_eq!(btf.func_id("my_fn"), Some((2, Some("mod"))));
        assert!(btf.add_split("other", &blob(&[], b"\0")).is_err());
    }

    /// The running kernel's BTF is real input: parse it and check offsets
    /// against invariants every kernel satisfies.
    #[test]
    fn reads_the_running_kernels_btf() {
        let btf = Btf::from_sys_fs().expect("this project needs a kernel with BTF");
        let size = btf.member_offset("inode", "i_size").unwrap();
        let sb = btf.member_offset("inode", "i_sb").unwrap();
        assert!(size > 0 && sb > 0 && size != sb);
        assert_eq!(btf.member_offset("list_head", "next").unwrap(), 0);
        assert_eq!(btf.member_offset("list_head", "prev").unwrap(), 8);
        assert!(btf.member_offset("inode", "no_such_member").is_err());
        assert!(btf.has_func("vfs_read"));
        assert_eq!(btf.enum_value("I_NEW").map(|v| v.count_ones()), Some(1));
    }
}
