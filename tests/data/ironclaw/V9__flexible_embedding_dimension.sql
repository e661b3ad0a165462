
DROP VIEW IF EXISTS chunks_pending_embedding;
DROP VIEW IF EXISTS memory_documents_summary;
DROP INDEX IF EXISTS idx_memory_chunks_embedding;
ALTER TABLE memory_chunks ALTER COLUMN embedding TYPE vector USING embedding::vector;

CREATE VIEW memory_documents_summary AS
SELECT d.id, d.user_id, d.path, d.created_at, d.updated_at,
       COUNT(c.id) AS chunk_count, COUNT(c.embedding) AS embedded_chunk_count
FROM memory_documents d LEFT JOIN memory_chunks c ON c.document_id = d.id
GROUP BY d.id;
CREATE VIEW chunks_pending_embedding AS
SELECT c.id AS chunk_id, c.document_id, d.user_id, d.path, LENGTH(c.content) AS content_length
FROM memory_chunks c JOIN memory_documents d ON d.id = c.document_id
WHERE c.embedding IS NULL;
