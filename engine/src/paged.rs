//! A growable vector stored in fixed-size pages, so that a large table never holds the
//! up-to-100 % spare capacity of a doubling `Vec`, and growing it never copies it.
//!
//! The first page grows like a `Vec` (doubling, so small tables stay small); once it is
//! full, every further page is allocated whole at [`PAGE`] elements. The spare capacity
//! is therefore at most one page, whatever the length. Indexing costs one more load
//! than a `Vec` (the page table is small and stays in cache).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const PAGE_BITS: u32 = 12;
/// Elements per page.
pub(crate) const PAGE: usize = 1 << PAGE_BITS;

/// A vector of pages of [`PAGE`] elements.
#[derive(Debug, Clone)]
pub(crate) struct Paged<T> {
    pages: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Paged<T> {
    fn default() -> Self {
        Paged {
            pages: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Paged<T> {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, v: T) {
        match self.pages.last_mut() {
            Some(page) if page.len() < PAGE => page.push(v),
            last => {
                // The first page grows by doubling; later ones are allocated whole.
                let mut page = if last.is_none() {
                    Vec::new()
                } else {
                    Vec::with_capacity(PAGE)
                };
                page.push(v);
                self.pages.push(page);
            }
        }
        self.len += 1;
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.pages.get(i >> PAGE_BITS)?.get(i & (PAGE - 1))
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.pages.get_mut(i >> PAGE_BITS)?.get_mut(i & (PAGE - 1))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.pages.iter().flatten()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.pages.iter_mut().flatten()
    }

    /// Heap bytes held (elements' own heap not included).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.pages.capacity() * std::mem::size_of::<Vec<T>>()
            + self
                .pages
                .iter()
                .map(|p| p.capacity() * std::mem::size_of::<T>())
                .sum::<usize>()
    }
}

impl<T> std::ops::Index<usize> for Paged<T> {
    type Output = T;
    #[inline]
    fn index(&self, i: usize) -> &T {
        &self.pages[i >> PAGE_BITS][i & (PAGE - 1)]
    }
}

impl<T> std::ops::IndexMut<usize> for Paged<T> {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.pages[i >> PAGE_BITS][i & (PAGE - 1)]
    }
}

impl<T> IntoIterator for Paged<T> {
    type Item = T;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<T>>>;
    fn into_iter(self) -> Self::IntoIter {
        self.pages.into_iter().flatten()
    }
}

impl<T> FromIterator<T> for Paged<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut out = Paged::default();
        for v in iter {
            out.push(v);
        }
        out
    }
}

/// Serialised as a plain sequence (the same bytes as a `Vec`).
impl<T: Serialize> Serialize for Paged<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len))?;
        for v in self.iter() {
            seq.serialize_element(v)?;
        }
        seq.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Paged<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(d).map(Paged::from_iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_fill_in_order_with_at_most_one_page_spare() {
        let mut p = Paged::default();
        for i in 0..3 * PAGE + 5 {
            p.push(i);
        }
        assert_eq!(p.len(), 3 * PAGE + 5);
        assert!((0..p.len()).all(|i| p[i] == i && p.get(i) == Some(&i)));
        assert_eq!(p.get(p.len()), None);
        assert!(p.iter().copied().eq(0..p.len()));
        let spare = p.heap_bytes() / 8 - p.len();
        assert!(spare <= PAGE + 8, "{spare}");
        let q: Paged<usize> = postcard::from_bytes(&postcard::to_allocvec(&p).unwrap()).unwrap();
        assert!(q.iter().eq(p.iter()));
        let v: Vec<usize> = p.iter().copied().collect();
        assert_eq!(
            postcard::to_allocvec(&v).unwrap(),
            postcard::to_allocvec(&p).unwrap()
        );
    }
}
