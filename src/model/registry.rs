//! The registry: the models serving now and those refused, with their reasons. A value, changed
//! copy-on-write by the repository; loading a model is the loader's job.

use std::collections::BTreeMap;
use std::sync::Arc;

// What loading produces, and the loader's names at the paths `main` and `config` have used.
pub use super::loader::{
    inspect, model_file, LoadError, LoadOptions, LoadedModel, RefusedModel, ENSEMBLE_FILE, MODEL_FILE,
};

#[derive(Default)]
pub struct ModelRegistry {
    models: BTreeMap<String, Arc<LoadedModel>>,
    refused: Vec<RefusedModel>,
}

impl ModelRegistry {
    /// This registry with `model` added, or in place of the model of the same name.
    pub fn with(&self, model: Arc<LoadedModel>) -> Self {
        let mut next = Self { models: self.models.clone(), refused: self.refused.clone() };
        next.refused.retain(|r| r.name != model.name);
        next.models.insert(model.name.clone(), model);
        next
    }

    /// This registry without the model `name`.
    pub fn without(&self, name: &str) -> Self {
        let mut next = Self { models: self.models.clone(), refused: self.refused.clone() };
        next.models.remove(name);
        next.refused.retain(|r| r.name != name);
        next
    }

    /// This registry with `refusal` listed (the model of that name, if any, keeps serving).
    pub fn with_refusal(&self, refusal: RefusedModel) -> Self {
        let mut next = Self { models: self.models.clone(), refused: self.refused.clone() };
        next.refused.retain(|r| r.name != refusal.name);
        next.refused.push(refusal);
        next
    }
}

impl ModelRegistry {
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedModel>> {
        self.models.get(name)
    }

    pub fn models(&self) -> impl Iterator<Item = &Arc<LoadedModel>> {
        self.models.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.models.keys().map(String::as_str).collect()
    }

    pub fn refused(&self) -> &[RefusedModel] {
        &self.refused
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}
