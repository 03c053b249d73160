//! The models directory as a live repository: models are loaded, reloaded and unloaded while the
//! server runs, by watching the directory or through the repository API (KServe/Triton's
//! `repository` extension).
//!
//! A change is atomic per model. The new version is opened, checked against the contract and
//! given its own engine off the async runtime; only then does the registry swap to it
//! (copy-on-write: a new map sharing the untouched models). Requests already holding the old
//! version finish on its engine, which stops once its last request is answered and its last
//! handle dropped. A version that fails to load is refused with one log line and the old one
//! keeps serving.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::loader::{
    load, model_file, refusal, LoadError, LoadOptions, LoadedModel, ENSEMBLE_FILE, MODEL_FILE,
};
use super::registry::ModelRegistry;
use crate::backend::OrtRuntime;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("models directory {path} cannot be read: {source}")]
    Directory { path: String, source: std::io::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("\"{0}\" is not a model name: a model is a directory right under the models directory")]
    BadName(String),
    #[error("model \"{name}\" is not in the models directory {dir}")]
    NotInDirectory { name: String, dir: String },
    #[error("model \"{0}\" is not loaded")]
    NotLoaded(String),
    #[error("model \"{name}\" refused, the version before it (if any) keeps serving: {source}")]
    Refused { name: String, source: Box<LoadError> },
    #[error("loading model \"{0}\" stopped unexpectedly")]
    Interrupted(String),
}

/// One model directory's state, as the repository index reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IndexEntry {
    pub name: String,
    /// The version serving now (none when not loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// `READY` (serving) or `UNAVAILABLE` (refused, unloaded, or not loaded yet).
    pub state: &'static str,
    pub reason: String,
}

/// What a model directory's files looked like: (relative path, size, modification time, inode).
/// The inode matters: a new version renamed into place may have the old one's size, and a copy
/// made with `cp -p` its modification time too.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>, u64)>;

/// What the watcher and the API remember between changes (behind one lock: one change at a time).
#[derive(Default)]
struct Changes {
    /// The files of each model directory when it was last loaded (or refused, or unloaded).
    known: BTreeMap<String, Fingerprint>,
    /// Files seen changed once: loaded when they look the same at the next poll (not mid-copy).
    settling: BTreeMap<String, Fingerprint>,
    /// The last version given to each name, so that a model unloaded and loaded again counts on.
    versions: BTreeMap<String, u64>,
    /// Models unloaded through the API: the watcher leaves them alone until their files change.
    unloaded: BTreeMap<String, String>,
    /// Model directories seen missing once: unloaded if they are still missing at the next poll
    /// (a model file replaced by delete-then-copy is briefly absent).
    missing: std::collections::BTreeSet<String>,
}

pub struct Repository {
    runtime: OrtRuntime,
    dir: PathBuf,
    options: LoadOptions,
    current: RwLock<Arc<ModelRegistry>>,
    changes: tokio::sync::Mutex<Changes>,
}

impl Repository {
    /// Loads every model of `dir` (blocking; see [`load_dir`]).
    pub fn open(runtime: OrtRuntime, dir: &Path, options: LoadOptions) -> Result<Self, RegistryError> {
        let (registry, changes) = first_load(dir, || load_dir(&runtime, dir, options))?;
        Ok(Self {
            runtime,
            dir: dir.to_path_buf(),
            options,
            current: RwLock::new(Arc::new(registry)),
            changes: tokio::sync::Mutex::new(changes),
        })
    }

    /// The models serving now.
    pub fn current(&self) -> Arc<ModelRegistry> {
        match self.current.read() {
            Ok(registry) => registry.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn swap(&self, change: impl FnOnce(&ModelRegistry) -> ModelRegistry) {
        let mut slot = match self.current.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(change(&slot));
    }

    /// Loads (or reloads) the model `name` from its directory; it takes over once it is ready.
    pub async fn load(&self, name: &str) -> Result<Arc<LoadedModel>, RepositoryError> {
        let dir = self.model_dir(name)?;
        let mut changes = self.changes.lock().await;
        changes.settling.remove(name);
        changes.unloaded.remove(name);
        let files = scan_one(&dir);
        let outcome = self.load_locked(&mut changes, name, dir).await;
        changes.known.insert(name.to_owned(), files);
        outcome
    }

    /// Stops serving `name`; requests in flight on it finish.
    pub async fn unload(&self, name: &str) -> Result<(), RepositoryError> {
        let mut changes = self.changes.lock().await;
        if self.current().get(name).is_none() {
            return Err(RepositoryError::NotLoaded(name.to_owned()));
        }
        self.swap(|registry| registry.without(name));
        changes.unloaded.insert(name.to_owned(), "unloaded through the repository API".to_owned());
        crate::metrics::model_changed(name, "unloaded");
        tracing::info!(model = %name, "model unloaded; requests in flight on it finish");
        Ok(())
    }

    async fn load_locked(
        &self,
        changes: &mut Changes,
        name: &str,
        dir: PathBuf,
    ) -> Result<Arc<LoadedModel>, RepositoryError> {
        let version = changes.versions.get(name).copied().unwrap_or(0) + 1;
        let (runtime, options, model_name) = (self.runtime.clone(), self.options, name.to_owned());
        let opened = tokio::task::spawn_blocking(move || load(&runtime, &model_name, &dir, options, version))
            .await
            .map_err(|_| RepositoryError::Interrupted(name.to_owned()))?;
        match opened {
            Ok(model) => {
                let model = Arc::new(model);
                let previous = self.current().get(name).map(|m| m.version);
                self.swap(|registry| registry.with(model.clone()));
                changes.versions.insert(name.to_owned(), version);
                crate::metrics::model_changed(name, "loaded");
                match previous {
                    Some(old_version) => tracing::info!(
                        model = %name, old_version, new_version = version,
                        "model reloaded; requests in flight finish on the old version"
                    ),
                    None => tracing::info!(model = %name, version, "model added"),
                }
                Ok(model)
            }
            Err(error) => {
                let refused = refusal(name, &self.dir.join(name), &error);
                self.swap(|registry| registry.with_refusal(refused));
                crate::metrics::model_changed(name, "refused");
                Err(RepositoryError::Refused { name: name.to_owned(), source: Box::new(error) })
            }
        }
    }

    /// One look at the directory: models whose files changed (and have stopped changing) are
    /// reloaded, new ones loaded, and those whose directory is gone unloaded.
    pub async fn poll(&self) {
        let Some(seen) = scan(&self.dir) else {
            // An unreadable directory (a mount gone away) is not a reason to unload everything.
            tracing::warn!(dir = %self.dir.display(), "cannot read the models directory; serving what is loaded");
            return;
        };
        let mut changes = self.changes.lock().await;
        for (name, files) in &seen {
            if changes.known.get(name) == Some(files) {
                changes.settling.remove(name);
                continue;
            }
            if changes.settling.get(name) != Some(files) {
                // Changed since the last look: wait one more poll in case it is still being copied.
                changes.settling.insert(name.clone(), files.clone());
                continue;
            }
            changes.settling.remove(name);
            changes.unloaded.remove(name);
            changes.known.insert(name.clone(), files.clone());
            // A refusal is logged and listed; nothing else to do here.
            let _ = self.load_locked(&mut changes, name, self.dir.join(name)).await;
        }
        changes.missing.retain(|name| !seen.contains_key(name));
        let gone: Vec<String> =
            changes.known.keys().filter(|name| !seen.contains_key(*name)).cloned().collect();
        for name in gone {
            if changes.missing.insert(name.clone()) {
                continue;
            }
            changes.missing.remove(&name);
            changes.known.remove(&name);
            changes.settling.remove(&name);
            if self.current().get(&name).is_some() || self.current().refused().iter().any(|r| r.name == name)
            {
                self.swap(|registry| registry.without(&name));
                crate::metrics::model_changed(&name, "unloaded");
                tracing::info!(model = %name, "model directory removed; model unloaded, requests in flight finish");
            }
        }
    }

    /// Polls the directory every `every` until the process ends.
    pub fn watch(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                self.poll().await;
            }
        })
    }

    /// Every model directory and every model served, with its state.
    pub async fn index(&self) -> Vec<IndexEntry> {
        let changes = self.changes.lock().await;
        let registry = self.current();
        let mut names: Vec<String> = changes.known.keys().cloned().collect();
        names.extend(registry.names().into_iter().map(str::to_owned));
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                if let Some(model) = registry.get(&name) {
                    IndexEntry { name, version: Some(model.version), state: "READY", reason: String::new() }
                } else {
                    let reason = registry
                        .refused()
                        .iter()
                        .find(|r| r.name == name)
                        .map(|r| r.reason.clone())
                        .or_else(|| changes.unloaded.get(&name).cloned())
                        .unwrap_or_else(|| "not loaded".to_owned());
                    IndexEntry { name, version: None, state: "UNAVAILABLE", reason }
                }
            })
            .collect()
    }

    /// The directory of model `name`: one plain path component under the models directory (so
    /// that the API cannot be pointed anywhere else).
    fn model_dir(&self, name: &str) -> Result<PathBuf, RepositoryError> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains(['/', '\\', '\0'])
            && Path::new(name).components().count() == 1;
        if !plain {
            return Err(RepositoryError::BadName(name.to_owned()));
        }
        let dir = self.dir.join(name);
        if model_file(&dir).is_none() {
            return Err(RepositoryError::NotInDirectory {
                name: name.to_owned(),
                dir: self.dir.display().to_string(),
            });
        }
        Ok(dir)
    }
}

/// Loads every model directory under `dir`: each one that loads serves, each one that fails is
/// listed as refused with its reason.
pub fn load_dir(
    runtime: &OrtRuntime,
    dir: &Path,
    options: LoadOptions,
) -> Result<ModelRegistry, RegistryError> {
    let directory_error = |source| RegistryError::Directory { path: dir.display().to_string(), source };
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(directory_error)?.flatten().map(|e| e.path()).collect();
    entries.sort();
    let mut registry = ModelRegistry::default();
    for entry in entries {
        let Some(name) = entry.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        if !entry.is_dir() || name.starts_with('.') {
            continue;
        }
        if model_file(&entry).is_none() {
            tracing::warn!(dir = %entry.display(), "skipping a directory without {MODEL_FILE} or {ENSEMBLE_FILE}");
            continue;
        }
        registry = match load(runtime, &name, &entry, options, 1) {
            Ok(model) => registry.with(Arc::new(model)),
            Err(error) => registry.with_refusal(refusal(&name, &entry, &error)),
        };
    }
    Ok(registry)
}

/// The first load of `dir` through `load_all`, and what the repository remembers of it. The
/// files are recorded before loading, as the watcher and [`Repository::load`] do: a model added or
/// replaced while the others load (start-up can take minutes) then differs from its record, and
/// the next poll loads it. Recorded after, it would look loaded until it changed again.
fn first_load(
    dir: &Path,
    load_all: impl FnOnce() -> Result<ModelRegistry, RegistryError>,
) -> Result<(ModelRegistry, Changes), RegistryError> {
    let seen = scan(dir).unwrap_or_default();
    let registry = load_all()?;
    let mut changes = Changes::default();
    for (name, files) in seen {
        if registry.get(&name).is_some() {
            changes.versions.insert(name.clone(), 1);
        }
        changes.known.insert(name, files);
    }
    Ok((registry, changes))
}

/// Every model directory under `dir` (those holding a graph or an ensemble) and its files.
fn scan(dir: &Path) -> Option<BTreeMap<String, Fingerprint>> {
    let entries = std::fs::read_dir(dir).ok()?;
    let models = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            let path = entry.path();
            (!name.starts_with('.') && path.is_dir() && model_file(&path).is_some())
                .then(|| (name, scan_one(&path)))
        })
        .collect();
    Some(models)
}

/// The files of one model directory, sorted, hidden ones (a copy in progress) left out. Ensembles
/// keep their members one level down (`seed-0/model.onnx`), so two levels are read.
fn scan_one(dir: &Path) -> Fingerprint {
    let mut files = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), 0)];
    while let Some((current, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else { continue };
        for entry in entries.flatten() {
            if entry.file_name().to_str().is_none_or(|n| n.starts_with('.')) {
                continue;
            }
            let Ok(metadata) = entry.metadata() else { continue };
            let path = entry.path();
            if metadata.is_dir() && depth < 2 {
                pending.push((path, depth + 1));
            } else if metadata.is_file() {
                let relative = path.strip_prefix(dir).map(Path::to_path_buf).unwrap_or(path);
                files.push((relative, metadata.len(), metadata.modified().ok(), metadata.ino()));
            }
        }
    }
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `bytes` as a new file renamed over `path`, as a deployment does.
    fn replace(path: &Path, bytes: &[u8]) {
        let parent = path.parent().expect("a parent");
        std::fs::create_dir_all(parent).expect("model directory");
        let staged = parent.join(".staged");
        std::fs::write(&staged, bytes).expect("written");
        std::fs::rename(&staged, path).expect("renamed");
    }

    /// A model replaced and one added while the first load runs: neither is recorded as loaded,
    /// so the next poll sees both changed (and loads them once they settle).
    #[test]
    fn models_changed_during_the_first_load_differ_from_what_is_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let models = dir.path();
        replace(&models.join("a").join(MODEL_FILE), b"version one");
        let (registry, changes) = first_load(models, || {
            // The loader has listed the directory; meanwhile a new version and a new model land.
            replace(&models.join("a").join(MODEL_FILE), b"version two, longer");
            replace(&models.join("b").join(MODEL_FILE), b"a model added during start-up");
            Ok(ModelRegistry::default())
        })
        .expect("loads");
        assert!(registry.is_empty());
        let seen = scan(models).expect("readable");
        assert_eq!(seen.len(), 2);
        assert!(changes.known.contains_key("a"), "a was there before loading");
        assert_ne!(changes.known.get("a"), seen.get("a"), "a's new version is a change to the next poll");
        assert!(!changes.known.contains_key("b"), "b is new to the next poll");
    }

    /// Files that did not change while loading are recorded as they are: the poll leaves them be.
    #[test]
    fn models_unchanged_during_the_first_load_are_recorded_as_they_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        replace(&dir.path().join("a").join(MODEL_FILE), b"version one");
        let (_, changes) = first_load(dir.path(), || Ok(ModelRegistry::default())).expect("loads");
        assert_eq!(changes.known, scan(dir.path()).expect("readable"));
    }
}
