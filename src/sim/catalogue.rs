//! The simulated model catalogue: realistic names, sizes, GGUF metadata and capabilities.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One model the sim can serve, with everything `/api/tags`, `/api/show` and `/api/ps` report.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Canonical name with a tag (`nomic-embed-text:latest`).
    pub name: String,
    /// Bytes on disk; also what residency charges against `--vram`.
    pub size: u64,
    pub family: String,
    pub families: Vec<String>,
    pub parameter_size: String,
    pub parameter_count: u64,
    pub quantization: String,
    pub capabilities: Vec<String>,
    /// The model's trained context window (`<arch>.context_length`).
    pub context_length: u64,
    /// Width of its hidden state, and the dimension of its embeddings.
    pub embedding_length: u64,
    pub modified_at: String,
}

impl ModelSpec {
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        size: u64,
        family: &str,
        parameter_size: &str,
        parameter_count: u64,
        quantization: &str,
        capabilities: &[&str],
        context_length: u64,
        embedding_length: u64,
    ) -> Self {
        Self {
            name: canonical(name),
            size,
            family: family.to_string(),
            families: vec![family.to_string()],
            parameter_size: parameter_size.to_string(),
            parameter_count,
            quantization: quantization.to_string(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            context_length,
            embedding_length,
            modified_at: "2025-10-02T11:04:19.512345+02:00".to_string(),
        }
    }

    /// A model made up from a name and a size (`--models custom-70b=40GiB`, `/api/pull`).
    pub fn custom(name: &str, size: u64) -> Self {
        let name = canonical(name);
        let base = name.split([':', '/']).next().unwrap_or("custom");
        let family: String = base
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect::<String>()
            .to_lowercase();
        let family = if family.is_empty() {
            "llama".to_string()
        } else {
            family
        };
        let embed = name.contains("embed");
        let caps: &[&str] = if embed {
            &["embedding"]
        } else {
            &["completion", "tools"]
        };
        // A Q4 GGUF holds roughly 0.6 bytes per parameter.
        let params = size as f64 / 0.6;
        let parameter_size = if params >= 1e9 {
            format!("{:.1}B", params / 1e9)
        } else {
            format!("{:.0}M", params / 1e6)
        };
        let mut spec = Self::new(
            &name,
            size,
            &family,
            &parameter_size,
            params as u64,
            "Q4_K_M",
            caps,
            if embed { 2048 } else { 32768 },
            if embed { 768 } else { 4096 },
        );
        spec.name = name;
        spec
    }

    /// The 64-hex digest Ollama shows for the manifest; stable per name.
    pub fn digest(&self) -> String {
        hex(&Sha256::digest(self.name.as_bytes()))
    }

    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// GGUF architecture name used as the prefix of `model_info` keys.
    pub fn arch(&self) -> &str {
        &self.family
    }

    pub fn details(&self) -> Value {
        json!({
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": self.families,
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        })
    }

    /// The `/api/tags` item.
    pub fn tag_entry(&self) -> Value {
        json!({
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at,
            "size": self.size,
            "digest": self.digest(),
            "details": self.details(),
        })
    }

    /// The `/api/show` body.
    pub fn show(&self) -> Value {
        let arch = self.arch();
        let mut info = serde_json::Map::new();
        info.insert("general.architecture".into(), json!(arch));
        info.insert(
            "general.parameter_count".into(),
            json!(self.parameter_count),
        );
        info.insert("general.file_type".into(), json!(15));
        info.insert("general.quantization_version".into(), json!(2));
        info.insert(format!("{arch}.context_length"), json!(self.context_length));
        info.insert(
            format!("{arch}.embedding_length"),
            json!(self.embedding_length),
        );
        info.insert(format!("{arch}.block_count"), json!(32));
        info.insert(format!("{arch}.attention.head_count"), json!(32));
        let template = if self.has("embedding") {
            "{{ .Prompt }}"
        } else {
            "{{- range .Messages }}<|{{ .Role }}|>{{ .Content }}{{ end }}<|assistant|>"
        };
        json!({
            "license": "Simulated model; no weights.",
            "modelfile": format!(
                "# Modelfile generated by \"ollama show\"\nFROM {}\nTEMPLATE \"\"\"{template}\"\"\"\nPARAMETER stop \"<|im_end|>\"\n",
                self.name
            ),
            "parameters": "stop                           \"<|im_end|>\"\ntemperature                    0.7",
            "template": template,
            "details": self.details(),
            "model_info": Value::Object(info),
            "tensors": [],
            "capabilities": self.capabilities,
            "modified_at": self.modified_at,
        })
    }
}

/// Ollama's canonical form: a name without a tag means `:latest`.
pub fn canonical(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The models a sim serves when `--models` is empty.
pub fn default_catalogue() -> Vec<ModelSpec> {
    vec![
        ModelSpec::new(
            "qwen3:8b",
            5_225_388_164,
            "qwen3",
            "8.2B",
            8_190_735_360,
            "Q4_K_M",
            &["completion", "tools", "thinking"],
            40_960,
            4096,
        ),
        ModelSpec::new(
            "llama3.1:8b",
            4_920_753_328,
            "llama",
            "8.0B",
            8_030_261_248,
            "Q4_K_M",
            &["completion", "tools"],
            131_072,
            4096,
        ),
        ModelSpec::new(
            "llama3.1:70b",
            42_520_413_916,
            "llama",
            "70.6B",
            70_553_706_496,
            "Q4_K_M",
            &["completion", "tools"],
            131_072,
            8192,
        ),
        ModelSpec::new(
            "qwen2.5-coder:7b",
            4_683_087_332,
            "qwen2",
            "7.6B",
            7_615_616_512,
            "Q4_K_M",
            &["completion", "tools", "insert"],
            32_768,
            3584,
        ),
        {
            let mut m = ModelSpec::new(
                "llava:7b",
                4_733_363_377,
                "llama",
                "7B",
                6_738_415_616,
                "Q4_0",
                &["completion", "vision"],
                32_768,
                4096,
            );
            m.families = vec!["llama".into(), "clip".into()];
            m
        },
        ModelSpec::new(
            "nomic-embed-text",
            274_302_450,
            "nomic-bert",
            "137M",
            136_727_040,
            "F16",
            &["embedding"],
            2048,
            768,
        ),
        ModelSpec::new(
            "gpt-oss:20b",
            13_780_173_839,
            "gptoss",
            "20.9B",
            20_914_757_184,
            "MXFP4",
            &["completion", "tools", "thinking"],
            131_072,
            2880,
        ),
    ]
}

/// Resolves `--models`: empty means the default catalogue; `name` picks from it (or makes a
/// 4 GiB custom model when unknown); `name=4GiB` makes a custom model of that size.
pub fn from_flags(flags: &[String]) -> Result<Vec<ModelSpec>, String> {
    let defaults = default_catalogue();
    if flags.is_empty() {
        return Ok(defaults);
    }
    let mut out: Vec<ModelSpec> = Vec::new();
    for flag in flags.iter().map(|f| f.trim()).filter(|f| !f.is_empty()) {
        let spec = match flag.split_once('=') {
            Some((name, size)) => {
                let size: bytesize::ByteSize = size
                    .trim()
                    .parse()
                    .map_err(|e| format!("--models {flag}: bad size: {e}"))?;
                let base = defaults.iter().find(|m| m.name == canonical(name.trim()));
                match base {
                    Some(b) => ModelSpec {
                        size: size.as_u64(),
                        ..b.clone()
                    },
                    None => ModelSpec::custom(name.trim(), size.as_u64()),
                }
            }
            None => defaults
                .iter()
                .find(|m| m.name == canonical(flag))
                .cloned()
                .unwrap_or_else(|| ModelSpec::custom(flag, 4 << 30)),
        };
        out.retain(|m| m.name != spec.name);
        out.push(spec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_pick_and_customise() {
        let all = from_flags(&[]).unwrap();
        assert_eq!(all.len(), 7);
        let picked = from_flags(&["qwen3:8b".into(), "big-70b=40GiB".into()]).unwrap();
        assert_eq!(picked[0].name, "qwen3:8b");
        assert!(picked[0].has("thinking"));
        assert_eq!(picked[1].name, "big-70b:latest");
        assert_eq!(picked[1].size, 40 << 30);
        assert_eq!(picked[0].digest().len(), 64);
        assert!(from_flags(&["x=lots".into()]).is_err());
    }

    #[test]
    fn show_has_flat_gguf_keys() {
        let m = &default_catalogue()[5];
        assert_eq!(m.name, "nomic-embed-text:latest");
        let show = m.show();
        assert_eq!(show["model_info"]["nomic-bert.embedding_length"], 768);
        assert_eq!(show["capabilities"], json!(["embedding"]));
    }
}
