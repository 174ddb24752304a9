//! The price catalog: which price applies to an invocation, and what it costs.
//!
//! The shipped catalog (`query/pricing/catalog.toml`) is compiled in; a user
//! file in the same format extends or corrects it. Prices are looked up at
//! query time by provider, region and the invocation's date, so a corrected
//! catalog re-prices history.

use std::collections::HashMap;
use std::path::Path;

use chrono::NaiveDate;
use serde::Deserialize;

/// The catalog shipped with faasight.
pub const SHIPPED: &str = include_str!("../../pricing/catalog.toml");

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("price catalog {origin}: {reason}")]
    Invalid { origin: String, reason: String },
    #[error("price catalog {origin}: {source}")]
    Read {
        origin: String,
        source: std::io::Error,
    },
}

/// CPU architecture of a Lambda function, as billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    /// `None` for a value that names no known architecture.
    pub fn parse(s: &str) -> Option<Arch> {
        match s.to_ascii_lowercase().as_str() {
            "x86_64" | "x86" | "amd64" | "x86-64" => Some(Arch::X86_64),
            "arm64" | "aarch64" | "arm" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

/// Cloud provider of an invocation (the `provider` column, OTel `cloud.provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Aws,
    Gcp,
    Azure,
}

impl Provider {
    pub fn parse(s: &str) -> Option<Provider> {
        match s.to_ascii_lowercase().as_str() {
            "aws" => Some(Provider::Aws),
            "gcp" => Some(Provider::Gcp),
            "azure" => Some(Provider::Azure),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tier {
    up_to_gb_seconds: Option<f64>,
    price: f64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByArch {
    pub x86_64: f64,
    pub arm64: f64,
}

impl ByArch {
    pub fn get(&self, arch: Arch) -> f64 {
        match arch {
            Arch::X86_64 => self.x86_64,
            Arch::Arm64 => self.arm64,
        }
    }
}

/// AWS Lambda prices for some regions from a date.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsPrices {
    pub requests_per_million: f64,
    x86_64: Vec<Tier>,
    arm64: Vec<Tier>,
    pub provisioned_concurrency_gb_second: Option<ByArch>,
    pub provisioned_duration_gb_second: Option<ByArch>,
    pub ephemeral_storage_gb_second: Option<f64>,
    pub snapstart_cache_gb_second: Option<f64>,
    pub snapstart_restore_gb: Option<f64>,
    pub free_requests_per_month: Option<f64>,
    pub free_gb_seconds_per_month: Option<f64>,
}

/// Google Cloud Run functions prices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpPrices {
    pub requests_per_million: f64,
    pub vcpu_second: f64,
    pub gib_second: f64,
    pub rounding_ms: f64,
    memory_vcpu: Vec<MemoryVcpu>,
    pub free_requests_per_month: Option<f64>,
    pub free_vcpu_seconds_per_month: Option<f64>,
    pub free_gib_seconds_per_month: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryVcpu {
    memory_mb: f64,
    vcpu: f64,
}

/// Azure Functions prices (Consumption, and Flex Consumption on demand).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzurePrices {
    pub executions_per_million: f64,
    pub gb_second: f64,
    pub memory_rounding_mb: f64,
    pub min_duration_ms: f64,
    pub min_memory_mb: f64,
    pub flex_gb_second: Option<f64>,
    pub flex_executions_per_million: Option<f64>,
    pub free_executions_per_month: Option<f64>,
    pub free_gb_seconds_per_month: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile<P> {
    regions: Vec<String>,
    effective_from: String,
    source: String,
    #[serde(flatten)]
    prices: P,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionFile<P> {
    default_region: Option<String>,
    #[serde(default = "Vec::new")]
    prices: Vec<EntryFile<P>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    aws: Option<SectionFile<AwsPrices>>,
    gcp: Option<SectionFile<GcpPrices>>,
    azure: Option<SectionFile<AzurePrices>>,
}

/// One price entry with where it applies and where it came from.
#[derive(Debug, Clone)]
pub struct Entry<P> {
    pub regions: Vec<String>,
    /// Start of the day it applies from, µs since the epoch (UTC).
    pub effective_micros: i64,
    pub source: String,
    pub prices: P,
}

/// The entries of one provider.
#[derive(Debug, Clone)]
pub struct ProviderPrices<P> {
    pub default_region: String,
    /// In load order: later entries win ties.
    pub entries: Vec<Entry<P>>,
    by_region: HashMap<String, Vec<usize>>,
}

/// A price found for an invocation; `estimated` when the region (or date)
/// was not covered and a fallback was used.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a, P> {
    pub prices: &'a P,
    pub estimated: bool,
}

impl<P> ProviderPrices<P> {
    fn new(default_region: String) -> Self {
        ProviderPrices {
            default_region,
            entries: Vec::new(),
            by_region: HashMap::new(),
        }
    }

    fn push(&mut self, entry: Entry<P>) {
        let index = self.entries.len();
        for region in &entry.regions {
            self.by_region
                .entry(region.clone())
                .or_default()
                .push(index);
        }
        self.entries.push(entry);
    }

    /// The entry for `region` in force at `at_micros` (the newest when `None`).
    pub fn find(&self, region: Option<&str>, at_micros: Option<i64>) -> Option<Found<'_, P>> {
        let (candidates, mut estimated) = match region.and_then(|r| self.by_region.get(r)) {
            Some(c) => (c, false),
            None => (self.by_region.get(&self.default_region)?, true),
        };
        let mut best: Option<usize> = None;
        for &i in candidates {
            let e = &self.entries[i];
            if at_micros.is_some_and(|t| e.effective_micros > t) {
                continue;
            }
            if best.is_none_or(|b| e.effective_micros >= self.entries[b].effective_micros) {
                best = Some(i);
            }
        }
        let index = match best {
            Some(i) => i,
            None => {
                // Older than every entry: the earliest price, flagged.
                estimated = true;
                *candidates
                    .iter()
                    .min_by_key(|&&i| self.entries[i].effective_micros)?
            }
        };
        Some(Found {
            prices: &self.entries[index].prices,
            estimated,
        })
    }
}

/// One price of the catalog, as the `prices` table shows it.
#[derive(Debug, Clone)]
pub struct PriceRow {
    pub provider: &'static str,
    pub region: String,
    pub effective_micros: i64,
    pub item: String,
    pub unit: &'static str,
    pub price: f64,
    pub source: String,
}

/// All prices faasight knows.
#[derive(Debug, Clone)]
pub struct PriceCatalog {
    pub aws: ProviderPrices<AwsPrices>,
    pub gcp: ProviderPrices<GcpPrices>,
    pub azure: ProviderPrices<AzurePrices>,
}

impl PriceCatalog {
    /// Text that changes whenever any price does: what stored, priced rows
    /// (the coalesced invocations) were made with.
    pub fn identity(&self) -> String {
        format!(
            "{:?}{:?}{:?}{:?}{:?}{:?}",
            self.aws.default_region,
            self.aws.entries,
            self.gcp.default_region,
            self.gcp.entries,
            self.azure.default_region,
            self.azure.entries
        )
    }

    /// The shipped catalog alone.
    pub fn shipped() -> Result<Self, CatalogError> {
        let mut catalog = PriceCatalog {
            aws: ProviderPrices::new(String::new()),
            gcp: ProviderPrices::new(String::new()),
            azure: ProviderPrices::new(String::new()),
        };
        catalog.extend_from_str("(shipped)", SHIPPED)?;
        Ok(catalog)
    }

    /// The shipped catalog extended by a user file (`--pricing`).
    pub fn load(overrides: Option<&Path>) -> Result<Self, CatalogError> {
        let mut catalog = Self::shipped()?;
        if let Some(path) = overrides {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
                origin: origin.clone(),
                source,
            })?;
            catalog.extend_from_str(&origin, &text)?;
        }
        Ok(catalog)
    }

    /// Adds the entries of a catalog file; its entries win ties with earlier ones.
    pub fn extend_from_str(&mut self, origin: &str, text: &str) -> Result<(), CatalogError> {
        let invalid = |reason: String| CatalogError::Invalid {
            origin: origin.to_string(),
            reason,
        };
        let file: CatalogFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if let Some(section) = file.aws {
            merge(&mut self.aws, section, "aws", validate_aws).map_err(invalid)?;
        }
        if let Some(section) = file.gcp {
            merge(&mut self.gcp, section, "gcp", validate_gcp).map_err(invalid)?;
        }
        if let Some(section) = file.azure {
            merge(&mut self.azure, section, "azure", validate_azure).map_err(invalid)?;
        }
        for (name, default, covered) in [
            (
                "aws",
                &self.aws.default_region,
                self.aws.by_region.contains_key(&self.aws.default_region),
            ),
            (
                "gcp",
                &self.gcp.default_region,
                self.gcp.by_region.contains_key(&self.gcp.default_region),
            ),
            (
                "azure",
                &self.azure.default_region,
                self.azure
                    .by_region
                    .contains_key(&self.azure.default_region),
            ),
        ] {
            if !covered {
                return Err(invalid(format!(
                    "[{name}] default_region {default:?} has no price entry"
                )));
            }
        }
        Ok(())
    }

    /// Every price as a row: (provider, region, effective_from µs, item,
    /// unit, price, source), for the `prices` table.
    pub fn rows(&self) -> Vec<PriceRow> {
        let mut rows = Vec::new();
        let mut push = |provider: &'static str,
                        regions: &[String],
                        effective: i64,
                        source: &str,
                        items: Vec<(String, &'static str, f64)>| {
            for region in regions {
                for (item, unit, price) in &items {
                    rows.push(PriceRow {
                        provider,
                        region: region.clone(),
                        effective_micros: effective,
                        item: item.clone(),
                        unit,
                        price: *price,
                        source: source.to_string(),
                    });
                }
            }
        };
        for e in &self.aws.entries {
            let p = &e.prices;
            let mut items = vec![(
                "requests".to_string(),
                "per request",
                p.requests_per_million / 1e6,
            )];
            for (arch, tiers) in [("x86_64", &p.x86_64), ("arm64", &p.arm64)] {
                let mut lower = 0.0;
                for t in tiers {
                    let name = match t.up_to_gb_seconds {
                        Some(up) if lower == 0.0 => {
                            format!("duration {arch} up to {up:e} GB-s/month")
                        }
                        Some(up) => format!("duration {arch} {lower:e} to {up:e} GB-s/month"),
                        None if lower > 0.0 => {
                            format!("duration {arch} above {lower:e} GB-s/month")
                        }
                        None => format!("duration {arch}"),
                    };
                    items.push((name, "per GB-second", t.price));
                    lower = t.up_to_gb_seconds.unwrap_or(lower);
                }
            }
            if let Some(v) = p.provisioned_concurrency_gb_second {
                items.push((
                    "provisioned concurrency x86_64".into(),
                    "per GB-second",
                    v.x86_64,
                ));
                items.push((
                    "provisioned concurrency arm64".into(),
                    "per GB-second",
                    v.arm64,
                ));
            }
            if let Some(v) = p.provisioned_duration_gb_second {
                items.push((
                    "provisioned duration x86_64".into(),
                    "per GB-second",
                    v.x86_64,
                ));
                items.push((
                    "provisioned duration arm64".into(),
                    "per GB-second",
                    v.arm64,
                ));
            }
            for (name, unit, v) in [
                (
                    "ephemeral storage above 512 MB",
                    "per GB-second",
                    p.ephemeral_storage_gb_second,
                ),
                (
                    "snapstart cache",
                    "per GB-second",
                    p.snapstart_cache_gb_second,
                ),
                (
                    "snapstart restore",
                    "per GB restored",
                    p.snapstart_restore_gb,
                ),
            ] {
                if let Some(v) = v {
                    items.push((name.to_string(), unit, v));
                }
            }
            push("aws", &e.regions, e.effective_micros, &e.source, items);
        }
        for e in &self.gcp.entries {
            let p = &e.prices;
            let items = vec![
                (
                    "requests".to_string(),
                    "per request",
                    p.requests_per_million / 1e6,
                ),
                ("vcpu".to_string(), "per vCPU-second", p.vcpu_second),
                ("memory".to_string(), "per GiB-second", p.gib_second),
            ];
            push("gcp", &e.regions, e.effective_micros, &e.source, items);
        }
        for e in &self.azure.entries {
            let p = &e.prices;
            let mut items = vec![
                (
                    "executions".to_string(),
                    "per execution",
                    p.executions_per_million / 1e6,
                ),
                (
                    "consumption duration".to_string(),
                    "per GB-second",
                    p.gb_second,
                ),
            ];
            if let Some(v) = p.flex_gb_second {
                items.push(("flex consumption duration".into(), "per GB-second", v));
            }
            if let Some(v) = p.flex_executions_per_million {
                items.push((
                    "flex consumption executions".into(),
                    "per execution",
                    v / 1e6,
                ));
            }
            push("azure", &e.regions, e.effective_micros, &e.source, items);
        }
        rows
    }

    /// Number of price entries over all providers.
    pub fn len(&self) -> usize {
        self.aws.entries.len() + self.gcp.entries.len() + self.azure.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn merge<P>(
    into: &mut ProviderPrices<P>,
    section: SectionFile<P>,
    name: &str,
    validate: fn(&P) -> Result<(), String>,
) -> Result<(), String> {
    if let Some(default) = section.default_region {
        into.default_region = default;
    }
    for (i, entry) in section.prices.into_iter().enumerate() {
        let at = |reason: String| format!("[[{name}.prices]] entry {}: {reason}", i + 1);
        if entry.regions.is_empty() {
            return Err(at("regions is empty".into()));
        }
        if entry.source.trim().is_empty() {
            return Err(at("every price needs a source".into()));
        }
        let date = NaiveDate::parse_from_str(&entry.effective_from, "%Y-%m-%d")
            .map_err(|e| at(format!("effective_from {:?}: {e}", entry.effective_from)))?;
        let effective_micros = date
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_micros())
            .ok_or_else(|| at("effective_from out of range".into()))?;
        validate(&entry.prices).map_err(at)?;
        into.push(Entry {
            regions: entry.regions,
            effective_micros,
            source: entry.source,
            prices: entry.prices,
        });
    }
    Ok(())
}

fn price_ok(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!(
            "{name} must be a finite non-negative number, not {v}"
        ))
    }
}

fn tiers_ok(name: &str, tiers: &[Tier]) -> Result<(), String> {
    let Some((last, rest)) = tiers.split_last() else {
        return Err(format!("{name} needs at least one tier"));
    };
    if last.up_to_gb_seconds.is_some() {
        return Err(format!(
            "{name}: the last tier must have no up_to_gb_seconds"
        ));
    }
    let mut previous = 0.0;
    for t in rest {
        let up_to = t.up_to_gb_seconds.unwrap_or(f64::NAN);
        if !(up_to.is_finite() && up_to > previous) {
            return Err(format!(
                "{name}: up_to_gb_seconds must be given and increase (tier ending at {up_to})"
            ));
        }
        previous = up_to;
    }
    for t in tiers {
        price_ok(name, t.price)?;
    }
    Ok(())
}

fn validate_aws(p: &AwsPrices) -> Result<(), String> {
    price_ok("requests_per_million", p.requests_per_million)?;
    tiers_ok("x86_64", &p.x86_64)?;
    tiers_ok("arm64", &p.arm64)?;
    for (name, v) in [
        ("ephemeral_storage_gb_second", p.ephemeral_storage_gb_second),
        ("snapstart_cache_gb_second", p.snapstart_cache_gb_second),
        ("snapstart_restore_gb", p.snapstart_restore_gb),
    ] {
        if let Some(v) = v {
            price_ok(name, v)?;
        }
    }
    for (name, v) in [
        (
            "provisioned_concurrency_gb_second",
            p.provisioned_concurrency_gb_second,
        ),
        (
            "provisioned_duration_gb_second",
            p.provisioned_duration_gb_second,
        ),
    ] {
        if let Some(v) = v {
            price_ok(name, v.x86_64)?;
            price_ok(name, v.arm64)?;
        }
    }
    Ok(())
}

fn validate_gcp(p: &GcpPrices) -> Result<(), String> {
    price_ok("requests_per_million", p.requests_per_million)?;
    price_ok("vcpu_second", p.vcpu_second)?;
    price_ok("gib_second", p.gib_second)?;
    if !(p.rounding_ms.is_finite() && p.rounding_ms >= 1.0) {
        return Err("rounding_ms must be at least 1".into());
    }
    if p.memory_vcpu.is_empty() {
        return Err("memory_vcpu needs at least one entry".into());
    }
    let mut previous = 0.0;
    for m in &p.memory_vcpu {
        if m.memory_mb.is_nan() || m.memory_mb <= previous {
            return Err("memory_vcpu must be sorted by increasing memory_mb".into());
        }
        previous = m.memory_mb;
        price_ok("vcpu", m.vcpu)?;
    }
    Ok(())
}

fn validate_azure(p: &AzurePrices) -> Result<(), String> {
    price_ok("executions_per_million", p.executions_per_million)?;
    price_ok("gb_second", p.gb_second)?;
    if !(p.memory_rounding_mb.is_finite() && p.memory_rounding_mb >= 1.0) {
        return Err("memory_rounding_mb must be at least 1".into());
    }
    price_ok("min_duration_ms", p.min_duration_ms)?;
    price_ok("min_memory_mb", p.min_memory_mb)?;
    Ok(())
}

impl AwsPrices {
    fn tiers(&self, arch: Arch) -> &[Tier] {
        match arch {
            Arch::X86_64 => &self.x86_64,
            Arch::Arm64 => &self.arm64,
        }
    }

    /// The first-tier (list) duration price per GB-second.
    pub fn gb_second(&self, arch: Arch) -> f64 {
        self.tiers(arch).first().map_or(0.0, |t| t.price)
    }

    /// One on-demand invocation: request + billed GB-seconds at the list
    /// price + ephemeral storage above the free 512 MB.
    pub fn invocation(
        &self,
        arch: Arch,
        billed_ms: f64,
        memory_mb: f64,
        ephemeral_mb: Option<f64>,
    ) -> f64 {
        let seconds = billed_ms / 1000.0;
        let mut cost =
            self.requests_per_million / 1e6 + seconds * (memory_mb / 1024.0) * self.gb_second(arch);
        if let (Some(storage), Some(price)) = (ephemeral_mb, self.ephemeral_storage_gb_second)
            && storage > 512.0
        {
            cost += seconds * ((storage - 512.0) / 1024.0) * price;
        }
        cost
    }

    /// Duration cost of a month's GB-seconds for one account, region and
    /// architecture, through the volume tiers.
    pub fn tiered_duration(&self, arch: Arch, gb_seconds: f64) -> f64 {
        let mut cost = 0.0;
        let mut lower = 0.0;
        for tier in self.tiers(arch) {
            let upper = tier.up_to_gb_seconds.unwrap_or(f64::INFINITY);
            if gb_seconds <= lower {
                break;
            }
            cost += (gb_seconds.min(upper) - lower) * tier.price;
            lower = upper;
        }
        cost
    }
}

impl GcpPrices {
    /// vCPUs allotted at a memory setting: the smallest listed size that
    /// holds it (the largest listed when above every size).
    pub fn vcpu(&self, memory_mb: f64) -> f64 {
        self.memory_vcpu
            .iter()
            .find(|m| m.memory_mb >= memory_mb)
            .or(self.memory_vcpu.last())
            .map_or(0.0, |m| m.vcpu)
    }

    /// One request: the request price + the duration rounded up to the
    /// billing increment × (vCPU-s + GiB-s prices).
    pub fn invocation(&self, duration_ms: f64, memory_mb: f64) -> f64 {
        let billed_ms = (duration_ms / self.rounding_ms).ceil() * self.rounding_ms;
        let seconds = billed_ms / 1000.0;
        self.requests_per_million / 1e6
            + seconds * self.vcpu(memory_mb) * self.vcpu_second
            + seconds * (memory_mb / 1024.0) * self.gib_second
    }
}

impl AzurePrices {
    /// One Consumption-plan execution, billed on observed memory rounded up
    /// to 128 MB, with the minimum duration and memory.
    pub fn consumption(&self, duration_ms: f64, memory_used_mb: f64) -> f64 {
        let ms = duration_ms.ceil().max(self.min_duration_ms);
        let memory = ((memory_used_mb / self.memory_rounding_mb).ceil() * self.memory_rounding_mb)
            .max(self.min_memory_mb);
        self.executions_per_million / 1e6 + (ms / 1000.0) * (memory / 1024.0) * self.gb_second
    }

    /// One Flex Consumption on-demand execution on an instance of `instance_mb`.
    pub fn flex(&self, duration_ms: f64, instance_mb: f64) -> Option<f64> {
        let gb_second = self.flex_gb_second?;
        let executions = self.flex_executions_per_million.unwrap_or(0.0);
        Some(executions / 1e6 + (duration_ms.ceil() / 1000.0) * (instance_mb / 1024.0) * gb_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> PriceCatalog {
        PriceCatalog::shipped().expect("the shipped catalog loads")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn aws_invocation_matches_the_published_arithmetic() {
        let c = catalog();
        let us = c.aws.find(Some("us-east-1"), None).expect("us-east-1");
        assert!(!us.estimated);
        // 662 ms at 128 MB on x86: 0.2e-6 + 0.662 × 0.125 × 0.0000166667.
        let want = 0.2e-6 + 0.662 * 0.125 * 0.0000166667;
        assert!(close(
            us.prices.invocation(Arch::X86_64, 662.0, 128.0, None),
            want
        ));
        // arm64, 1 GB, 1 s.
        let want = 0.2e-6 + 0.0000133334;
        assert!(close(
            us.prices.invocation(Arch::Arm64, 1000.0, 1024.0, None),
            want
        ));
        // 10 GB of ephemeral storage for 1 s at 128 MB: (10240-512)/1024 GB-s extra.
        let want = 0.2e-6 + 0.125 * 0.0000166667 + 9.5 * 0.0000000309;
        assert!(close(
            us.prices
                .invocation(Arch::X86_64, 1000.0, 128.0, Some(10240.0)),
            want
        ));
        // 512 MB of ephemeral storage is free.
        assert!(close(
            us.prices
                .invocation(Arch::X86_64, 1000.0, 128.0, Some(512.0)),
            0.2e-6 + 0.125 * 0.0000166667
        ));
    }

    #[test]
    fn non_default_region_and_unknown_region() {
        let c = catalog();
        let milan = c.aws.find(Some("eu-south-1"), None).expect("eu-south-1");
        assert!(!milan.estimated);
        let want = 0.23e-6 + 0.1 * 2.0 * 0.0000195172;
        assert!(close(
            milan.prices.invocation(Arch::X86_64, 100.0, 2048.0, None),
            want
        ));
        let mars = c.aws.find(Some("mars-north-1"), None).expect("default");
        assert!(mars.estimated);
        assert!(close(mars.prices.gb_second(Arch::X86_64), 0.0000166667));
        assert!(c.aws.find(None, None).expect("default").estimated);
    }

    #[test]
    fn volume_tiers_split_at_the_boundaries() {
        let c = catalog();
        let p = c.aws.find(Some("us-east-1"), None).expect("us").prices;
        assert!(close(
            p.tiered_duration(Arch::X86_64, 1000.0),
            1000.0 * 0.0000166667
        ));
        let six_b = 6e9 * 0.0000166667;
        assert!((p.tiered_duration(Arch::X86_64, 6e9) - six_b).abs() < 1e-6);
        let seven_b = six_b + 1e9 * 0.000015;
        assert!((p.tiered_duration(Arch::X86_64, 7e9) - seven_b).abs() < 1e-6);
        let twenty_b = six_b + 9e9 * 0.000015 + 5e9 * 0.0000133334;
        assert!((p.tiered_duration(Arch::X86_64, 20e9) - twenty_b).abs() < 1e-6);
        let arm = 7.5e9 * 0.0000133334 + 0.5e9 * 0.0000120001;
        assert!((p.tiered_duration(Arch::Arm64, 8e9) - arm).abs() < 1e-6);
        assert_eq!(p.tiered_duration(Arch::Arm64, 0.0), 0.0);
    }

    #[test]
    fn gcp_rounds_to_100_ms_and_prices_vcpu_and_memory() {
        let c = catalog();
        let p = c.gcp.find(Some("us-central1"), None).expect("gcp").prices;
        // 250 ms → 300 ms at 512 MB (0.333 vCPU, 0.5 GiB).
        let want = 0.4e-6 + 0.3 * 0.333 * 0.000024 + 0.3 * 0.5 * 0.0000025;
        assert!(close(p.invocation(250.0, 512.0), want));
        assert!(close(p.vcpu(100.0), 0.083));
        assert!(close(p.vcpu(1_000_000.0), 8.0));
    }

    #[test]
    fn azure_consumption_rounds_memory_and_enforces_minimums() {
        let c = catalog();
        let p = c
            .azure
            .find(Some("westeurope"), None)
            .expect("azure")
            .prices;
        // 50 ms at 200 MB used → 100 ms at 256 MB.
        let want = 0.2e-6 + 0.1 * 0.25 * 0.000016;
        assert!(close(p.consumption(50.0, 200.0), want));
        // 1.5 s at 60 MB → 1.5 s at 128 MB.
        let want = 0.2e-6 + 1.5 * 0.125 * 0.000016;
        assert!(close(p.consumption(1500.0, 60.0), want));
        let flex = p.flex(1000.0, 2048.0).expect("flex prices");
        assert!(close(flex, 0.4e-6 + 2.0 * 0.000026));
    }

    #[test]
    fn an_override_file_corrects_a_price_from_its_date_and_adds_regions() {
        let mut c = catalog();
        c.extend_from_str(
            "test.toml",
            r#"
[[aws.prices]]
regions = ["us-east-1", "ap-southeast-2"]
effective_from = "2026-01-01"
source = "test"
requests_per_million = 0.25
x86_64 = [{ price = 0.00002 }]
arm64 = [{ price = 0.000015 }]
"#,
        )
        .expect("override loads");
        let t = |d: &str| {
            NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .expect("date")
                .and_hms_opt(12, 0, 0)
                .expect("time")
                .and_utc()
                .timestamp_micros()
        };
        let before = c
            .aws
            .find(Some("us-east-1"), Some(t("2025-12-31")))
            .expect("old");
        assert!(close(before.prices.requests_per_million, 0.20));
        let after = c
            .aws
            .find(Some("us-east-1"), Some(t("2026-01-02")))
            .expect("new");
        assert!(close(after.prices.requests_per_million, 0.25));
        let sydney = c
            .aws
            .find(Some("ap-southeast-2"), Some(t("2026-06-01")))
            .expect("new");
        assert!(!sydney.estimated);
        // Before the only Sydney entry: the earliest price, flagged.
        let early = c
            .aws
            .find(Some("ap-southeast-2"), Some(t("2025-06-01")))
            .expect("early");
        assert!(early.estimated);
    }

    #[test]
    fn bad_catalog_files_are_refused_with_the_reason() {
        let cases = [
            ("[aws]\ndefault_region = 1", "default_region"),
            (
                "[[aws.prices]]\nregions=[\"x\"]\neffective_from=\"2026-13-01\"\nsource=\"s\"\nrequests_per_million=0.2\nx86_64=[{price=1.0}]\narm64=[{price=1.0}]",
                "effective_from",
            ),
            (
                "[[aws.prices]]\nregions=[\"x\"]\neffective_from=\"2026-01-01\"\nsource=\"s\"\nrequests_per_million=-1\nx86_64=[{price=1.0}]\narm64=[{price=1.0}]",
                "requests_per_million",
            ),
            (
                "[[aws.prices]]\nregions=[\"x\"]\neffective_from=\"2026-01-01\"\nsource=\"\"\nrequests_per_million=1\nx86_64=[{price=1.0}]\narm64=[{price=1.0}]",
                "source",
            ),
            (
                "[[aws.prices]]\nregions=[\"x\"]\neffective_from=\"2026-01-01\"\nsource=\"s\"\nrequests_per_million=1\nx86_64=[{price=1.0, up_to_gb_seconds=5.0}]\narm64=[{price=1.0}]",
                "last tier",
            ),
            ("[aws]\ndefault_region = \"nowhere-1\"", "nowhere-1"),
            ("[aws]\nprice = 1", "unknown field"),
        ];
        for (text, needle) in cases {
            let err = catalog()
                .extend_from_str("bad.toml", text)
                .expect_err(text)
                .to_string();
            assert!(err.contains("bad.toml"), "{err}");
            assert!(err.contains(needle), "{needle} not in {err}");
        }
    }

    #[test]
    fn architecture_and_provider_names() {
        assert_eq!(Arch::parse("ARM64"), Some(Arch::Arm64));
        assert_eq!(Arch::parse("x86_64"), Some(Arch::X86_64));
        assert_eq!(Arch::parse("sparc"), None);
        assert_eq!(Provider::parse("AWS"), Some(Provider::Aws));
        assert_eq!(Provider::parse("ibm"), None);
    }
}
