"""LCEL RAG chain, offline: BM25 + vector `EnsembleRetriever` -> rank scores -> `RerankProdCompressor` ->
prompt -> chat model. Re-rank after fusion, before the LLM.

An `EnsembleRetriever` returns documents without a retriever score (its RRF scores stay inside), so the
step after it writes each document's reciprocal rank, 1 / (60 + rank), into `metadata["score"]`: fusion
and the gate still get a retriever signal. Models: `RERANK_PROD_CROSS_ENCODER`, `RERANK_PROD_EMBEDDER`
(default: the hub names). The chat model is LangChain's fake one; put yours in its place.

    python examples/langchain_rag.py
"""

from __future__ import annotations

import os

import bm25s
from langchain_classic.retrievers import ContextualCompressionRetriever, EnsembleRetriever
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from sentence_transformers import SentenceTransformer

from langchain_rerank_prod import RerankProdCompressor

CROSS_ENCODER = os.environ.get("RERANK_PROD_CROSS_ENCODER", "cross-encoder/ms-marco-MiniLM-L-6-v2")
EMBEDDER = os.environ.get("RERANK_PROD_EMBEDDER", "sentence-transformers/all-MiniLM-L6-v2")
PASSAGES = [
    "Low-dose aspirin lowers the rate of heart attacks in men over fifty.",
    "Aspirin use was associated with a lower risk of myocardial infarction.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Statins reduce LDL cholesterol and cardiovascular events.",
    "Vitamin D supplementation did not reduce fracture risk in older adults.",
    "Photosynthesis converts light energy into chemical energy in plants.",
]
DOCUMENTS = [Document(page_content=text, id=f"doc-{i}") for i, text in enumerate(PASSAGES)]


class MiniLMEmbeddings(Embeddings):
    """A sentence-transformers model as LangChain embeddings (langchain-huggingface does the same)."""

    def __init__(self, model: str) -> None:
        self.model = SentenceTransformer(model, device="cpu")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(texts, normalize_embeddings=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class BM25Retriever(BaseRetriever):
    """BM25 with bm25s (the `[hybrid]` extra), no langchain-community needed."""

    documents: list[Document]
    k: int = 4

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        index = bm25s.BM25()
        index.index(bm25s.tokenize([d.page_content for d in self.documents], show_progress=False), show_progress=False)
        hits, _ = index.retrieve(bm25s.tokenize([query], show_progress=False), k=self.k, show_progress=False)
        return [self.documents[int(i)] for i in hits[0]]


class RankScored(BaseRetriever):
    """Gives each fused document a retriever score: its reciprocal rank, 1 / (k + rank)."""

    retriever: BaseRetriever
    k: int = 60

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        documents = self.retriever.invoke(query, config={"callbacks": run_manager.get_child()})
        return [
            d.model_copy(update={"metadata": {**d.metadata, "score": 1.0 / (self.k + rank)}})
            for rank, d in enumerate(documents, start=1)
        ]


def build_chain():
    vector = InMemoryVectorStore(MiniLMEmbeddings(EMBEDDER))
    vector.add_documents(DOCUMENTS)
    ensemble = EnsembleRetriever(
        retrievers=[BM25Retriever(documents=DOCUMENTS), vector.as_retriever(search_kwargs={"k": 4})],
        weights=[0.5, 0.5],
    )
    compressor = RerankProdCompressor(model=CROSS_ENCODER, top_n=2, fusion="weighted", timeout_s=10.0)
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=RankScored(retriever=ensemble)
    )
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from the context only.\n\nContext:\n{context}"), ("human", "{question}")]
    )
    llm = FakeListChatModel(responses=["Yes: low-dose aspirin lowers the rate of heart attacks."])

    def context(documents: list[Document]) -> str:
        return "\n".join(f"- {d.page_content}" for d in documents)

    return retriever, {
        "context": retriever | context,
        "question": RunnablePassthrough(),
    } | prompt | llm | StrOutputParser()


def main() -> None:
    question = "does aspirin prevent heart attacks"
    retriever, chain = build_chain()
    for document in retriever.invoke(question):
        meta = document.metadata
        print(f"{meta['relevance_score']:.3f}  {meta['rerank_source']:<6} {document.page_content}")
    print("answer:", chain.invoke(question))


if __name__ == "__main__":
    main()
